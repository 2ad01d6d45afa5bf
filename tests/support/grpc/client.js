// A proxyless gRPC client on grpc-js with @grpc/grpc-js-xds (npm), a second implementation
// beside grpcio: `node client.js TARGET N` makes N unary calls, one line each:
// "ok <reply>" or "error <code> <details>". The bootstrap comes from GRPC_XDS_BOOTSTRAP_CONFIG.
// grpc-js never fails a call fast on a missing resource, so every call has a 5 s deadline.
const grpc = require('@grpc/grpc-js');
require('@grpc/grpc-js-xds').register();

const [target, count] = [process.argv[2], Number(process.argv[3] || 1)];
const Client = grpc.makeGenericClientConstructor({}, 'Test');
const client = new Client(target, grpc.credentials.createInsecure());
const bytes = (b) => b;

function call(left) {
  if (left === 0) {
    client.close();
    // The xDS client keeps its ADS stream open; nothing else would end the process.
    process.exit(0);
  }
  client.makeUnaryRequest('/ecsxds.Test/Hello', bytes, bytes, Buffer.from('hello'),
    { deadline: Date.now() + 5000 }, (err, reply) => {
      console.log(err ? `error ${err.code} ${err.details}` : `ok ${reply.toString()}`);
      call(left - 1);
    });
}
call(count);
