//! Two network namespaces joined by a veth pair, for tests of transparent interception: an
//! "app" namespace (a task's, 10.200.0.2) whose TCP traffic iptables redirects into an Envoy,
//! and a "peer" namespace (10.200.0.1 plus the addresses a test asks for) that stands for
//! everything outside the task. A packet the rules miss lands in the peer, never off the
//! machine, and the root namespace's interfaces, routes and iptables are never touched.
//!
//! Needs root and iptables (`scripts/setup-test-env.sh`); without them it panics, so these
//! tests never pass by skipping. Every process it starts runs under `timeout`, in its own
//! process group, and is killed by that group's id when its guard drops; the namespaces are
//! deleted on drop, on a panic too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::moto::{repo_root, venv_python};

mod envoy;
#[allow(unused_imports)] // The support module is in every test binary; few use it.
pub use envoy::NsEnvoy;

pub const APP_ADDR: &str = "10.200.0.2";
pub const PEER_ADDR: &str = "10.200.0.1";
/// The uid ECS runs the proxy as (`ignoredUID` in the task's `proxyConfiguration`).
pub const ENVOY_UID: u32 = 1337;
/// Longest a server started here may live, whatever happens to the test.
const SERVER_LIFETIME: Duration = Duration::from_secs(600);
/// Longest a one-shot client may run.
const CLIENT_LIFETIME: Duration = Duration::from_secs(30);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a process runs, and as whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// In the app namespace, as the test's own uid (root): the app itself.
    App,
    /// In the app namespace as this uid (and gid, no other groups), e.g. [`ENVOY_UID`].
    AppAs(u32),
    /// In the peer namespace, as root.
    Peer,
}

impl Who {
    fn uid(self) -> Option<u32> {
        match self {
            Who::AppAs(uid) => Some(uid),
            Who::App | Who::Peer => None,
        }
    }
}

/// The two namespaces of one test; deleted (with the veth pair) on drop.
pub struct Namespaces {
    pub app: String,
    pub peer: String,
}

impl Namespaces {
    /// Makes `exds-{pid}-{tag}-app` and `-peer`, a veth pair between them (`vapp`, `vpeer`:
    /// made inside the namespaces, so they never exist in the root one), app = 10.200.0.2/24
    /// with its default route via the peer's 10.200.0.1/24, and `peer_addresses` as /32s on
    /// the peer's end, which the app reaches through that default route.
    /// `tag` names the test: unique among the tests of one binary, letters, digits and `-`.
    pub fn new(tag: &str, peer_addresses: &[&str]) -> Namespaces {
        require_root();
        assert!(
            !tag.is_empty() && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "namespace tag {tag:?}: use letters, digits and '-'"
        );
        remove_stale();
        let prefix = format!("exds-{}-{tag}", std::process::id());
        let ns = Namespaces {
            app: format!("{prefix}-app"),
            peer: format!("{prefix}-peer"),
        };
        for name in [&ns.app, &ns.peer] {
            if let Err(e) = ip(&format!("netns add {name}")) {
                panic!("interception tests need root and network namespaces: {e}");
            }
        }
        ns.link(peer_addresses)
            .unwrap_or_else(|e| panic!("wiring {prefix}: {e}"));
        ns
    }

    /// The veth pair, made inside the namespaces so it never exists in the root one.
    fn link(&self, peer_addresses: &[&str]) -> Result<(), String> {
        let (app, peer) = (self.app.as_str(), self.peer.as_str());
        ip(&format!(
            "link add vapp netns {app} type veth peer name vpeer netns {peer}"
        ))?;
        ip(&format!("-n {peer} link set lo up"))?;
        ip(&format!("-n {peer} addr add {PEER_ADDR}/24 dev vpeer"))?;
        for addr in peer_addresses {
            ip(&format!("-n {peer} addr add {addr}/32 dev vpeer"))?;
        }
        ip(&format!("-n {peer} link set vpeer up"))?;
        ip(&format!("-n {app} link set lo up"))?;
        ip(&format!("-n {app} addr add {APP_ADDR}/24 dev vapp"))?;
        ip(&format!("-n {app} link set vapp up"))?;
        ip(&format!("-n {app} route add default via {PEER_ADDR}")).map(drop)
    }

    /// The namespace `who` runs in.
    pub fn name(&self, who: Who) -> &str {
        match who {
            Who::App | Who::AppAs(_) => &self.app,
            Who::Peer => &self.peer,
        }
    }

    /// Installs `p` in the app namespace's nat table, rule for rule as ECS does for a task
    /// whose definition has a `proxyConfiguration` of type APPMESH.
    pub fn proxy_configuration(&self, p: &ProxyConfiguration) {
        for rule in p.iptables_rules() {
            if let Err(e) = ip(&format!(
                "netns exec {} iptables -w -t nat {rule}",
                self.app
            )) {
                panic!("interception tests need iptables (scripts/setup-test-env.sh): {e}");
            }
        }
    }

    /// `timeout ... ip netns exec NS [setpriv ...]`, in its own process group; the caller
    /// adds the program and its arguments.
    fn command(&self, who: Who, lifetime: Duration) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", &lifetime.as_secs().to_string()])
            .args(["ip", "netns", "exec", self.name(who)])
            .process_group(0)
            .kill_on_drop(true);
        if let Some(uid) = who.uid() {
            let uid = uid.to_string();
            cmd.args(["setpriv", "--reuid", &uid, "--regid", &uid])
                .arg("--clear-groups");
        }
        cmd
    }

    /// Starts `program args` as `who`, for at most 600 s; killed when the guard drops.
    pub fn spawn(&self, who: Who, program: &Path, args: &[&str]) -> NsProcess {
        let mut cmd = self.command(who, SERVER_LIFETIME);
        cmd.arg(program).args(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        NsProcess::spawn(cmd, &format!("{} in {:?}", program.display(), who))
    }

    /// `netns_parts.py serve SPECS` as `who` (see that file for the specs), once all listen.
    pub async fn serve(&self, who: Who, specs: &[&str]) -> NsProcess {
        let mut cmd = self.command(who, SERVER_LIFETIME);
        cmd.arg(python_for(who.uid()))
            .arg(parts_script())
            .arg("serve")
            .args(specs);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut server = NsProcess::spawn(cmd, &format!("serve {specs:?}"));
        let stdout = server.child.stdout.take().unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        let read = stdout.read_line(&mut line);
        let read = tokio::time::timeout(Duration::from_secs(20), read).await;
        assert!(
            matches!(read, Ok(Ok(_))) && line.trim() == "ready",
            "servers {specs:?} in {who:?} did not start (said {line:?}; their stderr is above)"
        );
        server
    }

    /// `GET url` from `who` (with `Host: host`): `"STATUS BODY"`, status 0 when it could not
    /// connect.
    pub async fn get(&self, who: Who, url: &str, host: Option<&str>) -> String {
        let mut args = vec!["get", url];
        args.extend(host.into_iter().flat_map(|h| ["--host", h]));
        self.run_part(who, &args).await
    }

    /// The first line a TCP server at `addr:port` sends to `who`, or `"error: ..."`.
    pub async fn tcp(&self, who: Who, addr: &str, port: u16) -> String {
        self.run_part(who, &["tcp", addr, &port.to_string()]).await
    }

    async fn run_part(&self, who: Who, args: &[&str]) -> String {
        let mut cmd = self.command(who, CLIENT_LIFETIME);
        cmd.arg(python_for(who.uid()))
            .arg(parts_script())
            .args(args);
        cmd.stdin(Stdio::null());
        let out = cmd.output().await.expect("run netns_parts.py");
        assert!(
            out.status.success(),
            "netns_parts.py {args:?} in {who:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.app, &self.peer] {
            if let Err(e) = ip(&format!("netns del {name}")) {
                eprintln!("could not delete network namespace {name}: {e}");
            }
        }
    }
}

/// What a task definition's `proxyConfiguration` (type APPMESH) says, as ECS hands it to the
/// CNI plugin that writes the task's iptables rules.
///
/// The rules are those of `plugins/aws-appmesh/plugin/commands.go` in
/// <https://github.com/aws/amazon-vpc-cni-plugins>; the fields are documented at
/// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ProxyConfiguration.html>.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfiguration {
    /// `ProxyIngressPort`: where traffic to `app_ports` goes.
    pub ingress_port: u16,
    /// `ProxyEgressPort`: where the task's outgoing TCP goes.
    pub egress_port: u16,
    /// `AppPorts`: the ports the app serves on (at most 15, iptables' multiport limit).
    pub app_ports: Vec<u16>,
    /// `IgnoredUID`: the proxy's own uid, whose traffic is left alone.
    pub ignored_uid: u32,
    /// `EgressIgnoredIPs`: destinations left alone (the task credentials and metadata).
    pub egress_ignored_ips: Vec<String>,
    /// `EgressIgnoredPorts`.
    pub egress_ignored_ports: Vec<u16>,
}

impl ProxyConfiguration {
    /// The values ECS's App Mesh examples use, for an app serving on `app_ports`.
    pub fn ecs_defaults(app_ports: &[u16]) -> ProxyConfiguration {
        ProxyConfiguration {
            ingress_port: 15000,
            egress_port: 15001,
            app_ports: app_ports.to_vec(),
            ignored_uid: ENVOY_UID,
            egress_ignored_ips: vec!["169.254.170.2".into(), "169.254.169.254".into()],
            egress_ignored_ports: Vec::new(),
        }
    }

    /// The nat-table commands (`iptables -t nat` arguments), in the plugin's order.
    pub fn iptables_rules(&self) -> Vec<String> {
        let ports = |ports: &[u16]| {
            assert!(
                ports.len() <= 15,
                "iptables multiport takes 15 ports at most"
            );
            (ports.iter().map(u16::to_string))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (to_ingress, to_egress) = (self.ingress_port, self.egress_port);
        let (uid, ips) = (self.ignored_uid, self.egress_ignored_ips.join(","));
        let mut rules = Vec::new();
        if !self.app_ports.is_empty() {
            let app = ports(&self.app_ports);
            let redirect = format!("-j REDIRECT --to-port {to_ingress}");
            rules.extend([
                "-N APPMESH_INGRESS".to_owned(),
                format!("-A APPMESH_INGRESS -p tcp -m multiport --dports {app} {redirect}"),
                "-A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j APPMESH_INGRESS".to_owned(),
            ]);
        }
        rules.push("-N APPMESH_EGRESS".to_owned());
        rules.push(format!(
            "-A APPMESH_EGRESS -m owner --uid-owner {uid} -j RETURN"
        ));
        if !self.egress_ignored_ports.is_empty() {
            let ignored = ports(&self.egress_ignored_ports);
            rules.push(format!(
                "-A APPMESH_EGRESS -p tcp -m multiport --dports {ignored} -j RETURN"
            ));
        }
        if !ips.is_empty() {
            rules.push(format!("-A APPMESH_EGRESS -p tcp -d {ips} -j RETURN"));
        }
        rules.extend([
            format!("-A APPMESH_EGRESS -p tcp -j REDIRECT --to {to_egress}"),
            "-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j APPMESH_EGRESS".to_owned(),
        ]);
        rules
    }
}

/// A process started in a namespace; its whole process group is killed when this drops.
pub struct NsProcess {
    child: Child,
    pgid: u32,
    /// Held open: a server started by [`Namespaces::serve`] exits when it closes.
    stdin: Option<ChildStdin>,
}

impl NsProcess {
    fn spawn(mut cmd: Command, what: &str) -> NsProcess {
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
        let pgid = child.id().expect("a started process has a pid");
        let stdin = child.stdin.take();
        NsProcess { child, pgid, stdin }
    }

    /// The pid of the `timeout` that leads the process group.
    pub fn pid(&self) -> u32 {
        self.pgid
    }

    fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if !self.has_exited() {
            let group = format!("-{}", self.pgid);
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &group])
                .status();
        }
    }
}

/// `ip ARGS` (split at spaces): its stdout, or what it said on failure.
fn ip(args: &str) -> Result<String, String> {
    let out = std::process::Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .map_err(|e| format!("ip {args}: {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(format!(
            "ip {args}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Panics unless the test runs as root: namespaces and iptables need it, and these tests never
/// pass by skipping.
fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"));
    let uid = uid.and_then(|l| l.split_whitespace().next()).unwrap_or("?");
    assert!(
        uid == "0",
        "interception tests need root and network namespaces: running as uid {uid}; run the tests as root (CI does)"
    );
}

/// Deletes the namespaces of earlier test processes that are gone (killed before their guards
/// could drop).
fn remove_stale() {
    let names = ip("netns list").unwrap_or_default();
    for name in names.lines().filter_map(|l| l.split_whitespace().next()) {
        let pid = name
            .strip_prefix("exds-")
            .and_then(|rest| rest.split('-').next());
        let gone = pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if gone {
            let _ = ip(&format!("netns del {name}"));
        }
    }
}

/// The python that runs `netns_parts.py` as `uid`: the venv's for root; the system's for
/// another uid, which cannot enter /root where the venv's interpreter lives (the parts use the
/// standard library only).
fn python_for(uid: Option<u32>) -> PathBuf {
    match uid {
        None => venv_python(),
        Some(_) => PathBuf::from("/usr/bin/python3"),
    }
}

fn parts_script() -> PathBuf {
    repo_root().join("tests/support/netns_parts.py")
}
