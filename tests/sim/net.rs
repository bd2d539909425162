//! The simulated network itself: order within a link, faults as TCP would show them.

use std::collections::HashSet;

use bytes::Bytes;
use tidewire::rng::Rng;
use tidewire::testing::{Delivery, Net, NetConfig, NetEvent, Side};
use tidewire::time::{Duration, Instant};

fn net(now: Instant) -> Net {
    let cfg = NetConfig { jitter: Duration::from_millis(50), ..NetConfig::default() };
    let mut n = Net::new(cfg, Rng::from_u64(3), now);
    n.add_host(0);
    n
}

/// Runs the network until nothing is due, returning every delivery.
fn drain(n: &mut Net, until: Instant) -> Vec<(Instant, Delivery)> {
    let mut out = Vec::new();
    while let Some(at) = n.next_due() {
        if at > until {
            break;
        }
        n.set_time(at);
        while let Some(d) = n.pop_due() {
            out.push((at, d));
        }
    }
    n.set_time(until);
    out
}

#[test]
fn bytes_of_one_link_stay_in_order_links_interleave() {
    let t0 = Instant::now();
    let mut n = net(t0);
    let a = n.connect(0, 0);
    let b = n.connect(1, 0);
    drain(&mut n, t0 + Duration::from_secs(1));
    for k in 0..200u32 {
        for link in [a, b] {
            n.write(link, Side::Server, Bytes::from(k.to_be_bytes().to_vec()));
        }
    }
    let got = drain(&mut n, t0 + Duration::from_secs(10));
    for link in [a, b] {
        let seq: Vec<u32> = got
            .iter()
            .filter(|(_, d)| d.link == link)
            .filter_map(|(_, d)| match &d.event {
                NetEvent::Data(b) => Some(u32::from_be_bytes(b[..4].try_into().unwrap())),
                _ => None,
            })
            .collect();
        assert_eq!(seq, (0..200).collect::<Vec<_>>());
    }
}

#[test]
fn a_partition_delays_until_it_heals_and_a_black_hole_times_out() {
    let t0 = Instant::now();
    let mut n = net(t0);
    let a = n.connect(0, 0);
    drain(&mut n, t0 + Duration::from_secs(1));
    let heal = t0 + Duration::from_secs(31);
    n.partition(HashSet::from([0]), 0, heal);
    assert_eq!(n.peer_dead_since(a), Some(t0 + Duration::from_secs(1)));
    n.write(a, Side::Client, Bytes::from_static(b"late"));
    let got = drain(&mut n, t0 + Duration::from_secs(60));
    assert_eq!(got.len(), 1);
    assert!(got[0].0 >= heal && got[0].1.event == NetEvent::Data(Bytes::from_static(b"late")));
    // A black hole: no FIN ever; the writer's TCP gives up after the user timeout.
    n.blackhole(a);
    n.write(a, Side::Server, Bytes::from_static(b"lost"));
    let got = drain(&mut n, t0 + Duration::from_secs(300));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].1.to, &got[0].1.event), (Side::Server, &NetEvent::Reset));
    assert_eq!(got[0].0, t0 + Duration::from_secs(180));
}

#[test]
fn a_crashed_host_resets_old_links_once_it_is_back() {
    let t0 = Instant::now();
    let mut n = net(t0);
    let a = n.connect(0, 0);
    drain(&mut n, t0 + Duration::from_secs(1));
    n.host_down(0, false);
    n.write(a, Side::Client, Bytes::from_static(b"ping"));
    assert!(drain(&mut n, t0 + Duration::from_secs(5)).is_empty(), "nobody answers");
    n.host_up(0);
    let got = drain(&mut n, t0 + Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].1.to, &got[0].1.event), (Side::Client, &NetEvent::Reset));
}

#[test]
fn each_end_of_a_black_hole_gives_up_on_its_own() {
    let t0 = Instant::now();
    let mut n = net(t0);
    let a = n.connect(0, 0);
    drain(&mut n, t0 + Duration::from_secs(1));
    n.blackhole(a);
    n.write(a, Side::Client, Bytes::from_static(b"ping"));
    drain(&mut n, t0 + Duration::from_secs(10));
    n.write(a, Side::Server, Bytes::from_static(b"data"));
    let got = drain(&mut n, t0 + Duration::from_secs(300));
    let resets: Vec<(Duration, Side)> = got
        .iter()
        .filter(|(_, d)| d.event == NetEvent::Reset)
        .map(|(at, d)| (*at - t0, d.to))
        .collect();
    assert_eq!(
        resets,
        [(Duration::from_secs(121), Side::Client), (Duration::from_secs(130), Side::Server)]
    );
    assert_eq!(n.link_count(), 0);
}
