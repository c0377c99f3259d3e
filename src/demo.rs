//! `spf demo`: spf at work on real traffic. A gRPC server and a gRPC client
//! (tonic, each in its own process) talk over a temporary Unix socket; the eBPF
//! probe captures them and the http2 decoder prints the conversation.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use spf_pipeline::config;
use spf_pipeline::runner::{self, Pipeline, RunOptions};
use spf_pipeline::stage::tokio_stop::StopFlag;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Print NDJSON instead of the pretty view.
    #[arg(long)]
    pub ndjson: bool,

    /// Internal: serve gRPC on this socket (the demo's server process).
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub serve: Option<PathBuf>,

    /// Internal: make the demo's gRPC calls to this socket (its client process).
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub client: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    if let Some(sock) = &args.serve {
        return runtime()?.block_on(serve(sock)).map(|()| ExitCode::SUCCESS);
    }
    if let Some(sock) = &args.client {
        return runtime()?
            .block_on(client(sock))
            .map(|()| ExitCode::SUCCESS);
    }
    if let Some(reason) = spf_probes::bpf_unavailable_reason() {
        spf_pipeline::diag!("spf demo captures with the eBPF probe, which needs root: {reason}");
        spf_pipeline::diag!("run it as: sudo spf demo");
        return Ok(ExitCode::from(1));
    }
    let dir = TempDir::new()?;
    let sock = dir.0.join("grpc.sock");
    let exe = std::env::current_exe().context("finding the spf executable")?;

    let mut server = Kill(
        Command::new(&exe)
            .args(["demo", "--serve"])
            .arg(&sock)
            .spawn()
            .context("starting the demo's gRPC server")?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        if let Some(st) = server.0.try_wait()? {
            bail!("the demo's gRPC server exited early ({st})");
        }
        if Instant::now() > deadline {
            bail!("the demo's gRPC server did not start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    // Both ends captured, joined by the connection view: each byte once. The
    // pretty view shows the frames as well as the calls they make up.
    let text = format!(
        "[source]\ntype = \"unix\"\npath = {}\n\n\
         [decoder]\ntype = \"http2\"\n\n[[sink]]\ntype = \"stdout\"\nformat = \"{}\"\n{}",
        toml_string(&sock),
        if args.ndjson { "ndjson" } else { "pretty" },
        if args.ndjson { "" } else { "verbose = 1\n" }
    );
    let reg = crate::run::registry();
    let cfg = config::parse(&reg, "spf demo", &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        let pipeline = Pipeline::build(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let stop = StopFlag::default();
        let run = tokio::spawn(runner::run(pipeline, RunOptions::default(), stop.clone()));
        spf_pipeline::diag!(
            "spf demo: capturing {} (a tonic gRPC server and client)",
            sock.display()
        );
        // The probe is attached once the pipeline is built: start the client now.
        let exe2 = exe.clone();
        let sock2 = sock.clone();
        let status = tokio::task::spawn_blocking(move || {
            Command::new(&exe2)
                .args(["demo", "--client"])
                .arg(&sock2)
                .status()
        })
        .await?
        .context("running the demo's gRPC client")?;
        // Let the last events through the reorder window before stopping.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.set();
        let outcome = run.await?;
        outcome.result.map_err(|e| anyhow::anyhow!("{e}"))?;
        if !status.success() {
            bail!("the demo's gRPC client failed ({status})");
        }
        spf_pipeline::diag!("spf demo: {}", outcome.summary);
        Ok(())
    });
    rt.shutdown_background();
    // Stops the server before the socket's directory goes.
    drop(server);
    result.map(|()| ExitCode::SUCCESS)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn toml_string(p: &Path) -> String {
    let s = p.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A private temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let base = std::env::temp_dir();
        for i in 0..100u32 {
            let p = base.join(format!("spf-demo-{}-{i}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
            }
        }
        bail!(
            "could not create a temporary directory in {}",
            base.display()
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed when dropped (on every early return).
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---- the gRPC service: `demo.Echo`, written as tonic's generated code is ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(int32, tag = "2")]
    pub n: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(int32, tag = "2")]
    pub n: i32,
}

#[derive(Clone)]
struct Echo;

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "demo.Echo";
}

impl<B> tonic::codegen::Service<http::Request<B>> for Echo
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<EchoReply, EchoRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            let resp = match req.uri().path() {
                "/demo.Echo/Say" => {
                    let svc = tower::service_fn(|r: tonic::Request<EchoRequest>| async move {
                        let m = r.into_inner();
                        Ok::<_, tonic::Status>(tonic::Response::new(EchoReply {
                            text: format!("echo: {}", m.text),
                            n: m.n * 2,
                        }))
                    });
                    grpc.unary(svc, req).await
                }
                "/demo.Echo/Count" => {
                    let svc = tower::service_fn(|r: tonic::Request<EchoRequest>| async move {
                        let m = r.into_inner();
                        let items: Vec<Result<EchoReply, tonic::Status>> = (1..=m.n.clamp(0, 100))
                            .map(|k| {
                                Ok(EchoReply {
                                    text: format!("item {k}"),
                                    n: k,
                                })
                            })
                            .collect();
                        Ok::<_, tonic::Status>(tonic::Response::new(tokio_stream::iter(items)))
                    });
                    grpc.server_streaming(svc, req).await
                }
                _ => tonic::Status::unimplemented("no such method").into_http(),
            };
            Ok(resp)
        })
    }
}

async fn serve(sock: &Path) -> Result<()> {
    let listener = tokio::net::UnixListener::bind(sock)
        .with_context(|| format!("binding {}", sock.display()))?;
    tonic::transport::Server::builder()
        .add_service(Echo)
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
        .await
        .context("serving gRPC")
}

async fn client(sock: &Path) -> Result<()> {
    let sock = sock.to_path_buf();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let p = sock.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(p).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .context("connecting to the demo's gRPC server")?;
    let mut grpc = tonic::client::Grpc::new(channel);
    for (text, n) in [("hello, spf", 21), ("hello again", 4)] {
        grpc.ready().await.context("gRPC channel")?;
        let mut req = tonic::Request::new(EchoRequest {
            text: text.into(),
            n,
        });
        req.metadata_mut()
            .insert("x-demo", "spf".parse().expect("ASCII metadata"));
        grpc.unary(
            req,
            http::uri::PathAndQuery::from_static("/demo.Echo/Say"),
            tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default(),
        )
        .await
        .context("calling demo.Echo/Say")?;
    }
    grpc.ready().await.context("gRPC channel")?;
    let mut stream = grpc
        .server_streaming(
            tonic::Request::new(EchoRequest {
                text: "count".into(),
                n: 3,
            }),
            http::uri::PathAndQuery::from_static("/demo.Echo/Count"),
            tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default(),
        )
        .await
        .context("calling demo.Echo/Count")?
        .into_inner();
    while stream
        .message()
        .await
        .context("reading demo.Echo/Count")?
        .is_some()
    {}
    Ok(())
}
