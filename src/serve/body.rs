//! The response half of a streaming xDS call, framed by hand.
//!
//! tonic's own response encoder keeps one growing buffer per stream for the stream's whole
//! life: after a sidecar's first full push that buffer stays at tens of KiB, idle, on every
//! stream. Here each response is framed into its own `Bytes` by the stream task and freed once
//! HTTP/2 has written it, so an idle stream holds no response buffer at all.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes};
use futures_channel::mpsc;
use http_body::Frame;
use tokio_stream::Stream;
use tonic::Status;

/// What a stream task hands to its response body: a framed message, or the final status.
pub(super) type Outgoing = Result<Bytes, Box<Status>>;

/// Frames one message the gRPC way: a zero compression flag, the length, the bytes.
pub(super) fn frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = Vec::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).expect("xDS responses are far below 4 GiB"));
    message
        .encode(&mut buf)
        .expect("the buffer was sized for the message");
    buf.into()
}

/// The HTTP response of a streaming call whose messages arrive on `outbox`.
pub(super) fn response(outbox: mpsc::Receiver<Outgoing>) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(ResponseBody {
        outbox,
        finished: false,
    }));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

struct ResponseBody {
    outbox: mpsc::Receiver<Outgoing>,
    finished: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let status = match ready!(Pin::new(&mut self.outbox).poll_next(cx)) {
            Some(Ok(message)) => return Poll::Ready(Some(Ok(Frame::data(message)))),
            Some(Err(status)) => *status,
            // The stream task ended without an error: the call completed normally.
            None => Status::ok(""),
        };
        self.finished = true;
        let mut trailers = http::HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}
