//! `ecs-xds ca init`: a root and an intermediate for a first try, written to a directory.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use super::CommandError;

/// Writes `root.pem`, `root-key.pem`, `intermediate.pem`, `intermediate-key.pem` and
/// `bundle.pem` (the root, what agents and Envoys trust) to `dir`; keys mode 0600. Refuses to
/// overwrite a key.
pub fn ca_init(dir: &Path, trust_domain: &str) -> Result<(), CommandError> {
    let fail = |message: String| CommandError::CaInit {
        dir: dir.to_owned(),
        message,
    };
    crate::spiffe::check_trust_domain(trust_domain)
        .map_err(|e| fail(format!("--trust-domain: {e}")))?;
    let files = crate::identity::ca::init(trust_domain, SystemTime::now())
        .map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    for (name, text, mode) in [
        ("root-key.pem", &files.root_key_pem, 0o600),
        ("intermediate-key.pem", &files.intermediate_key_pem, 0o600),
        ("root.pem", &files.root_pem, 0o644),
        ("bundle.pem", &files.root_pem, 0o644),
        ("intermediate.pem", &files.intermediate_pem, 0o644),
    ] {
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
        file.write_all(text.as_bytes())
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    }
    println!(
        "wrote a root and an intermediate for trust domain {trust_domain} to {}.\n\
         ecs-xds signs with intermediate.pem and intermediate-key.pem; agents and Envoys trust bundle.pem.\n\
         Keep root-key.pem offline: it is needed only to make the next intermediate.",
        dir.display()
    );
    Ok(())
}
