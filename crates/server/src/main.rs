//! `warren-server`: parses flags, binds listeners, prints one startup line, serves until SIGTERM
//! or SIGINT.

use clap::Parser;
use std::sync::Arc;

use warren_server::{
    bind, bind_management, bind_management_tls, control, lock_data_dir, open_broker, run, Config, Management,
};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WARREN_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config = Config::parse();
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    // Default: half the cores (at least one). The broker state is one lock, so more workers add
    // wake-ups more than throughput; the other cores serve the syncer, the kernel's network stack
    // and clients on the same machine. Measured in docs/benchmarks.md.
    let threads = config.threads();
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    let rt = builder.enable_all().build()?;
    rt.block_on(async move {
        let _lock = lock_data_dir(&config.data_dir)?;
        // Recovery comes before listening: clients never see a half-recovered broker.
        let broker = open_broker(&config)?;
        let listeners = bind(&config)?;
        let mut addrs: Vec<String> = listeners
            .iter()
            .filter_map(|l| {
                let a = l.tcp.local_addr().ok()?;
                Some(if l.tls.is_some() { format!("amqps={a}") } else { format!("amqp={a}") })
            })
            .collect();
        let mgmt_listener = bind_management(&config)?;
        let mgmt_tls = if mgmt_listener.is_some() { bind_management_tls(&config)? } else { None };
        let prometheus_listener = warren_server::prometheus::bind(&config)?;
        let secret = control::new_secret();
        let mut _control_file = None;
        if let Some(a) = mgmt_listener.as_ref().and_then(|l| l.local_addr().ok()) {
            addrs.push(format!("mgmt={a}"));
            // Written before the startup line, so a warrenctl started on seeing it finds the node.
            _control_file =
                Some(control::write_control_file(&config.data_dir, a, &secret).map_err(|e| {
                    anyhow::anyhow!("cannot write the control file in {}: {e}", config.data_dir.display())
                })?);
        }
        if let Some(a) = mgmt_tls.as_ref().and_then(|(l, _)| l.local_addr().ok()) {
            addrs.push(format!("mgmt_tls={a}"));
        }
        if let Some(a) = prometheus_listener.as_ref().and_then(|l| l.local_addr().ok()) {
            addrs.push(format!("prometheus={a}"));
        }
        // The one startup line; tests and scripts read the port from it.
        println!(
            "warren-server {} listening: {} data_dir={}",
            env!("CARGO_PKG_VERSION"),
            addrs.join(" "),
            config.data_dir.display()
        );
        let stop = Arc::new(tokio::sync::watch::channel(false).0);
        let on_signal = stop.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = on_signal.send(true);
        });
        let mgmt = mgmt_listener.map(|listener| Management { listener, secret, tls: mgmt_tls });
        run(config, broker, listeners, mgmt, prometheus_listener, stop).await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
