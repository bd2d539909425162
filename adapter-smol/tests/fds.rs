//! Connections dropped mid-handshake leave no task and no file descriptor behind. In its
//! own test binary so that no other test opens descriptors meanwhile.

use std::time::{Duration, Instant};

use smol::Timer;
use smol::future;
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;
use tidewire_smol::{Server, ServerConfig, Upgrade};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

#[test]
fn a_thousand_connections_dropped_mid_handshake_leave_nothing_behind() {
    smol::block_on(future::or(
        async {
            let server = Server::bind("127.0.0.1:0", ServerConfig::default()).await.unwrap();
            let handle = server.handle();
            let serving = smol::spawn(server.serve(|up: Upgrade| async move {
                drop(up.accept(None, &[]).await);
            }));
            // Let the executor's threads and the reactor open what they keep open.
            Timer::after(Duration::from_millis(100)).await;
            let before = open_fds();

            for _batch in 0..4 {
                let mut conns = Vec::new();
                for _ in 0..250 {
                    let mut s = TcpStream::connect(handle.local_addr()).await.unwrap();
                    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: web")
                        .await
                        .unwrap();
                    conns.push(s);
                }
                drop(conns);
            }

            // Settle: every server task sees EOF and ends.
            let deadline = Instant::now() + Duration::from_secs(5);
            while (handle.connections() > 0 || open_fds() > before) && Instant::now() < deadline {
                Timer::after(Duration::from_millis(20)).await;
            }
            assert_eq!(handle.connections(), 0, "tasks left behind");
            let after = open_fds();
            assert!(after <= before, "file descriptors leaked: {before} before, {after} after");

            let report = handle.shutdown(Duration::from_secs(1)).await;
            assert_eq!(report.dropped, 0);
            serving.await.unwrap();
        },
        async {
            Timer::after(Duration::from_secs(20)).await;
            panic!("test did not finish within 20 s");
        },
    ));
}
