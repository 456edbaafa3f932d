//! Connection flags shared by the commands that talk to a coordinator, and the
//! async runtime they run on.

use std::future::Future;
use std::path::PathBuf;

use anyhow::{Context, bail};
use custos_devkit::ClusterLayout;
use custos_devkit::client::{Client, connect_as, connect_with_token_file};

/// Where the coordinator is and who we are towards it.
#[derive(clap::Args, Clone, Debug)]
pub struct ConnArgs {
    /// Dev cluster directory (`custos dev up`): its cluster.json gives the URL,
    /// the CA and the API client tokens.
    #[arg(long, value_name = "DIR", default_value = custos_devkit::DEFAULT_DIR)]
    pub cluster: PathBuf,
    /// Coordinator gRPC URL (`https://host:port`), instead of --cluster; needs
    /// --ca and --token-file.
    #[arg(long, value_name = "URL", requires_all = ["ca", "token_file"])]
    pub endpoint: Option<String>,
    /// CA certificate (PEM) of the coordinator's TLS certificate (with --endpoint).
    #[arg(long, value_name = "FILE", requires = "endpoint")]
    pub ca: Option<PathBuf>,
    /// File holding your API bearer token (with --endpoint).
    #[arg(long, value_name = "FILE", requires = "endpoint")]
    pub token_file: Option<PathBuf>,
    /// Name to expect in the coordinator's certificate [default: the URL's host].
    #[arg(long, value_name = "NAME", requires = "endpoint")]
    pub tls_name: Option<String>,
    /// Which generated API client of the dev cluster to act as (payments-backend,
    /// approver-cli, auditor, admin) [default: the one for the command's role].
    #[arg(long, value_name = "ID", conflicts_with = "endpoint")]
    pub client: Option<String>,
}

impl ConnArgs {
    /// Connects; `default_client` is the dev-cluster client for the command's role.
    pub async fn connect(&self, default_client: &str) -> anyhow::Result<Client> {
        if let Some(url) = &self.endpoint {
            let (Some(ca), Some(token)) = (&self.ca, &self.token_file) else {
                bail!("--endpoint needs --ca FILE and --token-file FILE");
            };
            return Ok(connect_with_token_file(url, ca, token, self.tls_name.as_deref()).await?);
        }
        let layout = self.layout()?;
        let id = self.client.as_deref().unwrap_or(default_client);
        Ok(connect_as(&layout, id).await?)
    }

    /// The dev cluster's layout (only without --endpoint).
    pub fn layout(&self) -> anyhow::Result<ClusterLayout> {
        ClusterLayout::load(&self.cluster).with_context(|| {
            format!(
                "--cluster {}: no dev cluster there (run `custos dev up`, or use --endpoint URL --ca FILE --token-file FILE)",
                self.cluster.display()
            )
        })
    }
}

/// Runs `fut` on a fresh single-threaded runtime.
pub fn block_on<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(fut)
}

/// A gRPC error in words: the status code and the server's message.
pub fn rpc(what: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |s| {
        let hint = match s.code() {
            tonic::Code::Unauthenticated => " (check the token: --client or --token-file)",
            tonic::Code::PermissionDenied => {
                " (this API client lacks the role: pick another with --client)"
            }
            tonic::Code::Unimplemented => " (the coordinator is too old for this call)",
            tonic::Code::Unavailable => " (is the coordinator running? `custos dev status`)",
            _ => "",
        };
        anyhow::anyhow!("{what}: {:?}: {}{hint}", s.code(), s.message())
    }
}

/// Prints a line to stdout; `false` once stdout is closed (`| head`), so that
/// following commands end quietly instead of failing on a broken pipe.
pub fn emit(line: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}
