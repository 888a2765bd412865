//! Real etcd processes on loopback: start a cluster of 1 or 3 members, kill and restart them,
//! pause and resume them. This is the only code that spawns or signals processes; it never runs
//! inside a simulation.
//!
//! Every member listens on free loopback ports and keeps its data under one directory given by
//! the caller, with its log in `<name>.log` beside its data. Dropping an [`EtcdCluster`] kills
//! every member it started.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a cluster could not be started or a member could not be signalled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(
        "cannot run etcd ({binary}): {source}; install it (Debian: apt-get install etcd-server) \
         or point FAULTLINE_ETCD at the binary"
    )]
    Binary {
        binary: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("a cluster has 1 or 3 members; asked for {0}")]
    Size(usize),
    #[error("member {member} did not answer within {waited:?}; its log: {log}")]
    NotReady {
        member: String,
        waited: Duration,
        log: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProcessError {
    let what = what.into();
    move |source| ProcessError::Io { what, source }
}

/// The etcd binary to run: `$FAULTLINE_ETCD`, else `etcd` on the PATH.
pub fn etcd_binary() -> String {
    std::env::var("FAULTLINE_ETCD").unwrap_or_else(|_| "etcd".to_string())
}

/// The version line `etcd --version` prints first ("etcd Version: 3.4.23").
pub fn etcd_version(binary: &str) -> Result<String, ProcessError> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|source| ProcessError::Binary {
            binary: binary.to_string(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// How many times a start whose port was taken is tried on fresh ports.
const PORT_ATTEMPTS: usize = 5;

/// Free loopback ports, held together until all are chosen so none repeats.
fn free_ports(n: usize) -> Result<Vec<u16>, ProcessError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error("choosing a free loopback port"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error("reading a loopback port"))
}

/// What one member is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Running,
    Paused,
    Killed,
}

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    state: MemberState,
}

/// A local etcd cluster this process started.
#[derive(Debug)]
pub struct EtcdCluster {
    binary: String,
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts `size` members (1 or 3) with data under `dir`, and waits until each answers.
    pub async fn start(binary: &str, dir: &Path, size: usize) -> Result<EtcdCluster, ProcessError> {
        if size != 1 && size != 3 {
            return Err(ProcessError::Size(size));
        }
        etcd_version(binary)?;
        fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
        // A port chosen free can be taken (by another test's etcd, or an outgoing connection)
        // before etcd binds it; such a start is retried on fresh ports and a clean directory.
        let mut attempt = 1;
        loop {
            match EtcdCluster::start_once(binary, dir, size).await {
                Err(ProcessError::NotReady { log, .. })
                    if attempt < PORT_ATTEMPTS && log.contains("address already in use") =>
                {
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    async fn start_once(
        binary: &str,
        dir: &Path,
        size: usize,
    ) -> Result<EtcdCluster, ProcessError> {
        for i in 0..size {
            let name = format!("m{}", i + 1);
            let data_dir = dir.join(format!("{name}.etcd"));
            if data_dir.exists() {
                fs::remove_dir_all(&data_dir)
                    .map_err(io_error(format!("clearing {}", data_dir.display())))?;
            }
            let log = dir.join(format!("{name}.log"));
            if log.exists() {
                fs::remove_file(&log).map_err(io_error(format!("clearing {}", log.display())))?;
            }
        }
        let ports = free_ports(2 * size)?;
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{}", i + 1),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
                state: MemberState::Killed,
            })
            .collect();
        let mut cluster = EtcdCluster {
            binary: binary.to_string(),
            dir: dir.to_path_buf(),
            token: format!("faultline-{}-{}", std::process::id(), ports[0]),
            members,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        for i in 0..size {
            cluster.wait_ready(i, Duration::from_secs(30)).await?;
        }
        Ok(cluster)
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    pub fn state(&self, i: usize) -> MemberState {
        self.members[i].state
    }

    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", self.members[i].name))
    }

    fn spawn(&mut self, i: usize) -> Result<(), ProcessError> {
        let initial_cluster = self.initial_cluster();
        let member = &self.members[i];
        let data_dir = self.dir.join(format!("{}.etcd", member.name));
        let log_path = self.dir.join(format!("{}.log", member.name));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error(format!("opening {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_error(format!("opening {}", log_path.display())))?;
        let client_url = format!("http://127.0.0.1:{}", member.client_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        // The initial-cluster flags only matter on the first start; a restart finds its data
        // directory and rejoins with what it recorded there.
        let child = Command::new(&self.binary)
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr")
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|source| ProcessError::Binary {
                binary: self.binary.clone(),
                source,
            })?;
        let member = &mut self.members[i];
        member.child = Some(child);
        member.state = MemberState::Running;
        Ok(())
    }

    /// Waits until member `i` answers a serializable read (it has started and loaded its data;
    /// it need not have a leader).
    pub async fn wait_ready(&mut self, i: usize, timeout: Duration) -> Result<(), ProcessError> {
        let started = Instant::now();
        let endpoint = self.endpoint(i);
        loop {
            if let Some(child) = self.members[i].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.members[i].child = None;
                    self.members[i].state = MemberState::Killed;
                    return Err(self.not_ready(i, started, format!("exited with {status}; ")));
                }
            }
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_millis(1_000));
            if let Ok(mut client) =
                etcd_client::Client::connect([endpoint.as_str()], Some(options)).await
            {
                let get = etcd_client::GetOptions::new().with_serializable();
                if client.get("faultline/ready", Some(get)).await.is_ok() {
                    return Ok(());
                }
            }
            if started.elapsed() > timeout {
                return Err(self.not_ready(i, started, String::new()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn not_ready(&self, i: usize, started: Instant, why: String) -> ProcessError {
        let log = fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        ProcessError::NotReady {
            member: self.members[i].name.clone(),
            waited: started.elapsed(),
            log: format!("{why}{}", tail.join(" | ")),
        }
    }

    /// Kills member `i` with SIGKILL (no chance to flush anything) and reaps it.
    pub fn kill(&mut self, i: usize) -> Result<(), ProcessError> {
        let member = &mut self.members[i];
        if let Some(mut child) = member.child.take() {
            child
                .kill()
                .map_err(io_error(format!("killing {}", member.name)))?;
            child
                .wait()
                .map_err(io_error(format!("reaping {}", member.name)))?;
        }
        member.state = MemberState::Killed;
        Ok(())
    }

    /// Starts member `i` again on its data directory (after [`EtcdCluster::kill`]).
    pub fn restart(&mut self, i: usize) -> Result<(), ProcessError> {
        if self.members[i].child.is_some() {
            return Ok(());
        }
        self.spawn(i)
    }

    /// Stops member `i` with SIGSTOP: its sockets stay open but it answers nothing.
    pub fn pause(&mut self, i: usize) -> Result<(), ProcessError> {
        self.signal(i, "-STOP")?;
        self.members[i].state = MemberState::Paused;
        Ok(())
    }

    /// Resumes a paused member with SIGCONT.
    pub fn resume(&mut self, i: usize) -> Result<(), ProcessError> {
        self.signal(i, "-CONT")?;
        self.members[i].state = MemberState::Running;
        Ok(())
    }

    fn signal(&self, i: usize, signal: &str) -> Result<(), ProcessError> {
        let member = &self.members[i];
        let Some(child) = member.child.as_ref() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .map_err(io_error(format!("signalling {}", member.name)))?;
        if !status.success() {
            return Err(ProcessError::Io {
                what: format!("kill {signal} {}", member.name),
                source: std::io::Error::other(format!("kill exited with {status}")),
            });
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                // SIGKILL ends a stopped process too.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
