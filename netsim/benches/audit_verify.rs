//! The audit verifier's throughput: records a second on a bundle of 5 banks with 100 and with
//! 1000 clients each (one simulated honest epoch, exported from member 1's log). Criterion
//! reports elements (records) a second; the two sizes show whether the cost grows faster
//! than the bundle.
//!
//! `cargo bench -p bankmesh-netsim --bench audit_verify`

use bankmesh_netsim::{Sim, SimConfig};
use bankmesh_store::audit;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bundle(clients: usize) -> (Vec<u8>, bankmesh_protocol::genesis::Consortium) {
    let mut config = SimConfig::new(31);
    config.clients_per_bank = clients;
    // A packet every 100 ms of the 300 s window: room for up to 3,000 clients per bank.
    config.privacy.packet_ms = 100;
    let mut sim = Sim::new(config).unwrap_or_else(|e| panic!("{e}"));
    sim.run_epoch().unwrap_or_else(|e| panic!("{e}"));
    let c = (**sim.consortium()).clone();
    let mut out = Vec::new();
    audit::export(
        sim.store(1).expect("member 1"),
        &c,
        &c.genesis.to_toml(),
        &mut out,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (out, c)
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit_verify");
    group.sample_size(10);
    for clients in [100, 1000] {
        let (bytes, consortium) = bundle(clients);
        let v = audit::verify(bytes.as_slice(), &consortium, |_, _| {});
        assert!(v.ok(), "{:?}", v.failures);
        eprintln!(
            "5 banks x {clients} clients: {} records, {} bytes",
            v.records,
            bytes.len()
        );
        group.throughput(Throughput::Elements(v.records));
        group.bench_with_input(BenchmarkId::from_parameter(clients), &bytes, |b, bytes| {
            b.iter(|| audit::verify(bytes.as_slice(), &consortium, |_, _| {}))
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
