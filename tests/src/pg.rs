//! A PostgreSQL server of the test's own (`initdb` into a temporary
//! directory, a free port on loopback, trust authentication), for tests
//! that crash the database: the shared server at 127.0.0.1:5432 serves
//! every other test at the same time and must never be restarted by one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The server; stopped (immediately) and its files removed on drop.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The newest `/usr/lib/postgresql/<major>/bin` (Debian's layout).
fn bindir() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql (apt install postgresql)")
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_string_lossy().parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("no /usr/lib/postgresql/<major>/bin/initdb")
        .1
}

/// Whether this process runs as root (`/proc/self` belongs to its user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs a server binary as the `postgres` user when this process is root
/// (`initdb` and `postgres` refuse root), else as this user.
fn as_server_user(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePg {
    /// Creates a cluster, starts it, and creates database `db`.
    pub fn start(db: &str) -> PrivatePg {
        let dir = tempfile::tempdir().unwrap();
        let bindir = bindir();
        if is_root() {
            // The server user must own its directory.
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown the PostgreSQL directory",
            );
        }
        let mut init = as_server_user(&bindir.join("initdb"));
        init.arg("-D").arg(dir.path().join("data")).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        run(init, "initdb");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePg { dir, bindir, port };
        pg.pg_ctl_start();
        let mut create = Command::new(pg.bindir.join("createdb"));
        create
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(port.to_string())
            .arg(db);
        run(create, "createdb");
        pg
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self) {
        let mut c = as_server_user(&self.bindir.join("pg_ctl"));
        c.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .arg("-o")
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
                self.port,
                self.dir.path().display()
            ))
            .args(["-w", "-t", "60", "start"]);
        run(c, "pg_ctl start");
    }

    /// Stops the server the way a crash does (`-m immediate`: no
    /// checkpoint, every connection cut; the next start runs crash
    /// recovery).
    pub fn crash(&self) {
        let mut c = as_server_user(&self.bindir.join("pg_ctl"));
        c.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"]);
        run(c, "pg_ctl stop -m immediate");
    }

    /// Starts it again after [`PrivatePg::crash`] (waits until it accepts
    /// connections).
    pub fn start_again(&self) {
        self.pg_ctl_start();
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = as_server_user(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
