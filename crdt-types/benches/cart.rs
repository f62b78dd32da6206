//! Cart benchmarks: local operations, remote delta merges, encoded sizes, and the same
//! workloads on the `crdts` crate (its `Map` of `PNCounter`s and its `Orswot`).
//!
//! Run with `cargo bench -p crdt-types --bench cart`. The size table is printed first.
//!
//! Workload: four remote replicas operate on one cart (65% add of 1-3, 25% set_quantity to
//! 0-5, 10% remove), each on its own copy, catching up with the others every 16 operations.
//! The deltas (ops, for `crdts`) are generated up front in that causal order; the measured
//! routine merges all of them, by move, into the base cart of another replica. As a node does
//! (ARCHITECTURE.md), replicas fold their delivered vector into the cart's context with
//! `compact_stable`: the generators after each catch-up, the receiver every 64 deltas (timed).

use crdt_types::{
    AwSet, Cart, Dot, Key, Kind, Lattice, ObjectDelta, ReplicaId, Session, Stamp, Tag,
    VersionVector, wire,
};
use crdts::{CmRDT, CvRDT, Map, Orswot, PNCounter};
use criterion::{BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

/// Replica ids as a node would pick them: random 64-bit numbers.
const REPLICAS: [u64; 5] = [
    0x5bd1_e995_7f4a_7c15,
    0x9e37_79b9_aa55_0102,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
    0x85eb_ca77_c2b2_ae63,
];
const LOCAL: usize = 4;
const DELTAS: usize = 20_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Issues tags like a gossip node: the next sequence number and an increasing HLC value.
struct Tags {
    replica: ReplicaId,
    seq: u64,
}
impl Tags {
    fn new(i: usize) -> Self {
        Tags {
            replica: ReplicaId(REPLICAS[i]),
            seq: 0,
        }
    }
    fn next(&mut self) -> Tag {
        self.seq += 1;
        Tag {
            dot: Dot::new(self.replica, self.seq),
            // 2026-09 in hlc-gen's layout (ms since 2024-01-01 << 22), plus the sequence.
            stamp: Stamp {
                hlc: (85_932_800_000u64 << 22) + self.seq,
                replica: self.replica,
            },
        }
    }
}

/// The sku names, formatted once so the measured loops do not format strings.
fn sku(i: u64) -> &'static str {
    static SKUS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SKUS.get_or_init(|| (0..1000).map(|i| format!("sku-{i:05}")).collect())[i as usize].as_str()
}

#[derive(Clone, Copy)]
enum Op {
    Add(u64, u64),
    Set(u64, u64),
    Remove(u64),
}

fn random_op(rng: &mut Rng, items: u64) -> Op {
    let s = rng.below(items);
    match rng.below(100) {
        0..65 => Op::Add(s, 1 + rng.below(3)),
        65..90 => Op::Set(s, rng.below(6)),
        _ => Op::Remove(s),
    }
}

fn apply_ours(cart: &mut Cart, tags: &mut Tags, op: Op) -> Cart {
    match op {
        Op::Add(s, n) => cart.add(tags.next(), sku(s), n),
        Op::Set(s, q) => cart.set_quantity(tags.next(), sku(s), q),
        Op::Remove(s) => cart.remove(sku(s)),
    }
    .expect("valid operation")
}

type CrdtsCart = Map<String, PNCounter<u64>, u64>;

fn crdts_value(map: &CrdtsCart, sku: &str) -> i64 {
    map.get(&sku.to_owned())
        .val
        .map_or(0, |c| i64::try_from(&c.read()).unwrap_or(0))
}

fn apply_crdts(
    map: &mut CrdtsCart,
    actor: u64,
    op: Op,
) -> crdts::map::Op<String, PNCounter<u64>, u64> {
    let op = match op {
        Op::Add(s, n) => {
            let ctx = map.read_ctx().derive_add_ctx(actor);
            map.update(sku(s), ctx, |c, ctx| c.inc_many(ctx.dot.actor, n))
        }
        Op::Set(s, 0) | Op::Remove(s) => {
            let ctx = map.get(&sku(s).to_owned()).derive_rm_ctx();
            map.rm(sku(s), ctx)
        }
        Op::Set(s, q) => {
            let diff = q as i64 - crdts_value(map, sku(s));
            let ctx = map.read_ctx().derive_add_ctx(actor);
            map.update(sku(s), ctx, |c, ctx| {
                if diff >= 0 {
                    c.inc_many(ctx.dot.actor, diff as u64)
                } else {
                    c.dec_many(ctx.dot.actor, diff.unsigned_abs())
                }
            })
        }
    };
    map.apply(op.clone());
    op
}

/// A cart with `items` items, each added by one of the remote replicas, known to everyone.
fn base_carts(items: u64) -> (Cart, CrdtsCart, Vec<Tags>) {
    let mut tags: Vec<Tags> = (0..REPLICAS.len()).map(Tags::new).collect();
    let mut ours = Cart::new();
    let mut theirs = CrdtsCart::new();
    for s in 0..items {
        let r = (s % 4) as usize;
        apply_ours(&mut ours, &mut tags[r], Op::Add(s, 1 + s % 3));
        apply_crdts(&mut theirs, REPLICAS[r], Op::Add(s, 1 + s % 3));
    }
    (ours, theirs, tags)
}

/// The deltas (and `crdts` ops) of [`DELTAS`] remote operations on a cart of `items` items.
struct Workload {
    base: Cart,
    deltas: Vec<Cart>,
    /// After delta `i` (every 64th), what the receiver has delivered from each origin.
    delivered: Vec<(usize, VersionVector)>,
    crdts_base: CrdtsCart,
    crdts_ops: Vec<crdts::map::Op<String, PNCounter<u64>, u64>>,
}

fn workload(items: u64) -> Workload {
    let (base, crdts_base, mut tags) = base_carts(items);
    let mut ours = vec![base.clone(); 4];
    let mut theirs = vec![crdts_base.clone(); 4];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ items);
    let (mut deltas, mut crdts_ops, mut delivered) = (Vec::new(), Vec::new(), Vec::new());
    let frontier =
        |tags: &[Tags]| -> VersionVector { tags.iter().map(|t| (t.replica, t.seq)).collect() };
    for i in 0..DELTAS {
        let r = (rng.below(4)) as usize;
        let op = random_op(&mut rng, items);
        deltas.push(apply_ours(&mut ours[r], &mut tags[r], op));
        crdts_ops.push(apply_crdts(&mut theirs[r], REPLICAS[r], op));
        if i % 16 == 15 {
            // Replica r catches up with everyone: it now holds every delta of every origin.
            for o in 0..4 {
                if o != r {
                    let (s, t) = (ours[o].clone(), theirs[o].clone());
                    ours[r].join(s);
                    theirs[r].merge(t);
                }
            }
            ours[r].compact(&frontier(&tags));
        }
        if i % 64 == 63 {
            delivered.push((i, frontier(&tags)));
        }
    }
    Workload {
        base,
        deltas,
        delivered,
        crdts_base,
        crdts_ops,
    }
}

/// Merges `deltas` in order into `cart`, folding the delivered vector in every 64 deltas.
#[inline(never)]
fn merge_all(mut cart: Cart, deltas: Vec<Cart>, delivered: &[(usize, VersionVector)]) -> Cart {
    let mut next = delivered.iter().peekable();
    for (i, d) in deltas.into_iter().enumerate() {
        cart.join(d);
        if let Some((_, vv)) = next.next_if(|(at, _)| *at == i) {
            cart.compact(vv);
        }
    }
    cart
}

/// The `crdts` side of [`merge_all`]: applies `ops` in order, by move, to `map`. Never
/// inlined, so a profiler can name it (as `merge_all`).
#[inline(never)]
fn crdts_apply_all(
    mut map: CrdtsCart,
    ops: Vec<crdts::map::Op<String, PNCounter<u64>, u64>>,
) -> CrdtsCart {
    for op in ops {
        map.apply(op);
    }
    map
}

fn bench_merges(c: &mut Criterion) {
    let mut group = c.benchmark_group("cart/remote_delta_merges");
    for items in [10u64, 100, 1000] {
        let w = workload(items);
        // Both replay the same history: check they agree on the visible cart.
        let check = merge_all(w.base.clone(), w.deltas.clone(), &w.delivered);
        let mut check_crdts = w.crdts_base.clone();
        for op in w.crdts_ops.iter().cloned() {
            check_crdts.apply(op);
        }
        let visible = check.items().count();
        let visible_crdts = (0..items)
            .filter(|&s| crdts_value(&check_crdts, sku(s)) > 0)
            .count();
        println!(
            "workload {items} items: {visible} visible after merging (crdts: {visible_crdts})"
        );

        group.throughput(Throughput::Elements(DELTAS as u64));
        group.bench_function(format!("statemesh/{items}_items"), |b| {
            b.iter_batched(
                || (w.base.clone(), w.deltas.clone()),
                |(cart, deltas)| merge_all(cart, deltas, &w.delivered),
                BatchSize::LargeInput,
            )
        });
        group.bench_function(format!("crdts/{items}_items"), |b| {
            b.iter_batched(
                || (w.crdts_base.clone(), w.crdts_ops.clone()),
                |(map, ops)| crdts_apply_all(map, ops),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// The local-ops workload: 4096 random operations (the merge workload's mix) by a fifth
/// replica on its own 100-item cart, in a loop, folding its own dots into the context every
/// 64 operations as a node's `compact_stable` would.
struct LocalOps {
    cart: Cart,
    tags: Tags,
    stable: VersionVector,
    ops: Vec<Op>,
    i: usize,
}

impl LocalOps {
    fn new(base: &Cart) -> Self {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        LocalOps {
            cart: base.clone(),
            tags: Tags::new(LOCAL),
            stable: base.context().vv().clone(),
            ops: (0..4096).map(|_| random_op(&mut rng, 100)).collect(),
            i: 0,
        }
    }

    /// The next operation, and its delta.
    #[inline]
    fn step(&mut self) -> Cart {
        self.i = (self.i + 1) % self.ops.len();
        if self.i.is_multiple_of(64) {
            self.stable.raise(self.tags.replica, self.tags.seq);
            self.cart.compact(&self.stable);
        }
        apply_ours(&mut self.cart, &mut self.tags, self.ops[self.i])
    }
}

/// `n` steps of [`LocalOps`], each delta dropped as the bench drops it. Never inlined, so a
/// profiler can name it.
#[inline(never)]
fn local_ops_all(local: &mut LocalOps, n: usize) {
    for _ in 0..n {
        black_box(local.step());
    }
}

/// The `crdts` side of [`local_ops_all`]: the same operations on its map, `n` of them from
/// operation `*i` on.
#[inline(never)]
fn crdts_local_all(map: &mut CrdtsCart, ops: &[Op], i: &mut usize, n: usize) {
    for _ in 0..n {
        *i = (*i + 1) % ops.len();
        black_box(apply_crdts(map, REPLICAS[LOCAL], ops[*i]));
    }
}

fn bench_local_ops(c: &mut Criterion) {
    let mut group = c.benchmark_group("cart/local_ops");
    group.throughput(Throughput::Elements(1));
    let (base, crdts_base, _) = base_carts(100);
    let mut local = LocalOps::new(&base);
    group.bench_function("statemesh/100_items", |b| {
        b.iter(|| black_box(local.step()))
    });
    let ops = local.ops.clone();
    group.bench_function("crdts/100_items", |b| {
        let mut map = crdts_base.clone();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % ops.len();
            black_box(apply_crdts(&mut map, REPLICAS[LOCAL], ops[i]))
        })
    });
    group.finish();
}

fn bench_state_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("cart/full_state_merge");
    let w = workload(100);
    let half = w.delivered.len() / 2;
    let other = merge_all(
        w.base.clone(),
        w.deltas[..=w.delivered[half].0].to_vec(),
        &w.delivered[..=half],
    );
    let mut other_crdts = w.crdts_base.clone();
    for op in w.crdts_ops.iter().take(w.delivered[half].0 + 1).cloned() {
        other_crdts.apply(op);
    }
    group.bench_function("statemesh/100_items", |b| {
        b.iter_batched(
            || (w.base.clone(), other.clone()),
            |(mut a, b)| {
                a.join(b);
                a
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("crdts/100_items", |b| {
        b.iter_batched(
            || (w.crdts_base.clone(), other_crdts.clone()),
            |(mut a, b)| {
                a.merge(b);
                a
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn bench_set(c: &mut Criterion) {
    // The add-wins set alone: AwSet against crdts' Orswot, 100 members, 70% add / 30% remove.
    let mut group = c.benchmark_group("set/remote_delta_merges");
    let mut tags: Vec<Tags> = (0..REPLICAS.len()).map(Tags::new).collect();
    let mut ours = vec![AwSet::<String>::new(); 4];
    let mut theirs = vec![Orswot::<String, u64>::new(); 4];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut deltas, mut ops) = (Vec::new(), Vec::new());
    for i in 0..DELTAS {
        let r = rng.below(4) as usize;
        let m = sku(rng.below(100)).to_owned();
        if rng.below(10) < 7 {
            deltas.push(ours[r].add(tags[r].next(), m.clone()));
            let ctx = theirs[r].read_ctx().derive_add_ctx(REPLICAS[r]);
            let op = theirs[r].add(m, ctx);
            theirs[r].apply(op.clone());
            ops.push(op);
        } else {
            deltas.push(ours[r].remove(&m));
            let ctx = theirs[r].contains(&m).derive_rm_ctx();
            let op = theirs[r].rm(m, ctx);
            theirs[r].apply(op.clone());
            ops.push(op);
        }
        if i % 16 == 15 {
            for o in 0..4 {
                if o != r {
                    let (s, t) = (ours[o].clone(), theirs[o].clone());
                    ours[r].join(s);
                    theirs[r].merge(t);
                }
            }
            ours[r].compact(&tags.iter().map(|t| (t.replica, t.seq)).collect());
        }
    }
    group.throughput(Throughput::Elements(DELTAS as u64));
    group.bench_function("statemesh_awset", |b| {
        b.iter_batched(
            || deltas.clone(),
            |deltas| {
                let mut set = AwSet::new();
                for d in deltas {
                    set.join(d);
                }
                set
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("crdts_orswot", |b| {
        b.iter_batched(
            || ops.clone(),
            |ops| {
                let mut set = Orswot::new();
                for op in ops {
                    set.apply(op);
                }
                set
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Prints encoded sizes: one add's delta and one remove's delta against the full state.
fn print_sizes() {
    println!("\nEncoded sizes (wire codec: version byte + bincode 2), bytes");
    println!(
        "| items | full state | add delta | remove delta | full / add delta | crdts full state | crdts add op |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for items in [1u64, 10, 100, 1000] {
        let (mut cart, mut map, mut tags) = base_carts(items);
        // A node folds delivered dots into the context (compact_stable) as it goes.
        let stable: VersionVector = tags.iter().map(|t| (t.replica, t.seq)).collect();
        cart.compact(&stable);
        let full = wire::encoded_len(&cart);
        let add = apply_ours(&mut cart.clone(), &mut tags[LOCAL], Op::Add(0, 1));
        let remove = apply_ours(&mut cart, &mut tags[LOCAL], Op::Remove(0));
        let (add, remove) = (wire::encoded_len(&add), wire::encoded_len(&remove));
        let crdts_full = wire::encoded_len(&map);
        let crdts_op = wire::encoded_len(&apply_crdts(&mut map, REPLICAS[LOCAL], Op::Add(0, 1)));
        println!(
            "| {items} | {full} | {add} | {remove} | {:.1}x | {crdts_full} | {crdts_op} |",
            full as f64 / add as f64
        );
    }
    println!();
}

/// Profiling aid: with `CART_PROFILE=<items>` set, the binary only builds that workload and
/// merges it (and applies the `crdts` ops) `CART_PROFILE_RUNS` times (default 4), for
/// `valgrind --tool=callgrind --toggle-collect='*merge_all*'` (or `'*crdts_apply_all*'` for
/// the `crdts` side): instructions per merge are the collected total over `runs * 20,000`.
/// With `CART_PROFILE=local` it runs `runs * 100,000` local operations on a 100-item cart
/// instead (`*local_ops_all*`, `*crdts_local_all*`), per operation over `runs * 100,000`;
/// with `CART_PROFILE=decode` it decodes delta shapes (see [`profile_decode`]).
fn profile(items: &str) {
    let runs: usize =
        std::env::var("CART_PROFILE_RUNS").map_or(4, |r| r.parse().expect("a number"));
    if items == "decode" {
        profile_decode(runs);
        return;
    }
    if items == "local" {
        let (base, crdts_base, _) = base_carts(100);
        let mut local = LocalOps::new(&base);
        let mut map = crdts_base;
        let mut i = 0;
        for _ in 0..runs {
            local_ops_all(&mut local, LOCAL_PROFILE_OPS);
            crdts_local_all(&mut map, &local.ops, &mut i, LOCAL_PROFILE_OPS);
        }
        println!("ran {runs} x {LOCAL_PROFILE_OPS} local operations on a cart of 100 items");
        return;
    }
    let items: u64 = items.parse().expect("CART_PROFILE=<items> or local");
    let w = workload(items);
    for _ in 0..runs {
        black_box(merge_all(w.base.clone(), w.deltas.clone(), &w.delivered));
        black_box(crdts_apply_all(w.crdts_base.clone(), w.crdts_ops.clone()));
    }
    println!("merged {runs} x {DELTAS} deltas into a cart of {items} items");
}

/// The fields of a delta as gossip encodes them (`gossip::messages`' `BodyRef` / `BodyOwned`,
/// in that order): what a node decodes for every delta it receives.
#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    origin: ReplicaId,
    seq: u64,
    stamp: Stamp,
    key: Key,
    payload: ObjectDelta,
}

/// The delta shapes of the decode profile, encoded as gossip carries them (`Body`): a one-add
/// cart delta (most deltas), a `set_quantity`, a remove of an item of 6 entries, a session
/// delta (a `set_attr`) and a 10-item cart's full state (a state transfer).
fn decode_shapes() -> Vec<(&'static str, Vec<u8>)> {
    let (base, _, mut tags) = base_carts(10);
    let mut cart = base;
    let stable: VersionVector = tags.iter().map(|t| (t.replica, t.seq)).collect();
    cart.compact(&stable);
    // The writer's dots are well past its first (a first dot of a replica would go to the
    // context's vector, all later ones of a one-add delta go to its cloud).
    tags[LOCAL].seq = 4_000;
    let remote = &mut tags[1];
    for _ in 0..5 {
        apply_ours(&mut cart, remote, Op::Add(3, 1));
    }
    let add = apply_ours(&mut cart, &mut tags[LOCAL], Op::Add(2, 1));
    let set = apply_ours(&mut cart, &mut tags[LOCAL], Op::Set(5, 4));
    let remove = apply_ours(&mut cart, &mut tags[LOCAL], Op::Remove(3));
    let mut session = Session::new();
    let session_delta = session
        .set_attr(
            tags[LOCAL].next(),
            "theme",
            &serde_json::json!({"dark": true}),
        )
        .expect("valid attribute");
    let tag = tags[LOCAL].next();
    let body = |kind, payload| {
        wire::encode(&Body {
            origin: tag.dot.replica,
            seq: tag.dot.counter,
            stamp: tag.stamp,
            key: Key::new(kind, "cart-00042"),
            payload,
        })
        .expect("encodes")
    };
    vec![
        ("add", body(Kind::Cart, ObjectDelta::Cart(add))),
        ("set", body(Kind::Cart, ObjectDelta::Cart(set))),
        ("remove", body(Kind::Cart, ObjectDelta::Cart(remove))),
        (
            "session",
            body(Kind::Session, ObjectDelta::Session(session_delta)),
        ),
        ("state10", body(Kind::Cart, ObjectDelta::Cart(cart))),
    ]
}

/// Decodes (and drops) one encoded delta `n` times, as `gossip`'s `EncodedDelta::decode` does;
/// one function per shape so that callgrind counts each apart (each returns its own constant
/// too, or the linker would fold the identical functions into one).
macro_rules! decode_loops {
    ($($name:ident = $id:literal),*) => {$(
        #[inline(never)]
        fn $name(bytes: &[u8], n: usize) -> usize {
            let mut ok = 0;
            for _ in 0..n {
                let body: Result<Body, _> = wire::decode(black_box(bytes));
                ok += usize::from(black_box(body).is_ok());
            }
            ok * $id
        }
    )*};
}
decode_loops!(
    decode_add_all = 1,
    decode_set_all = 2,
    decode_remove_all = 3,
    decode_session_all = 4,
    decode_state10_all = 5
);

/// `ObjectDelta::encoded_len` of one delta `n` times (what gossip asks of every payload).
#[inline(never)]
fn encoded_len_all(delta: &ObjectDelta, n: usize) -> usize {
    (0..n).map(|_| black_box(delta).encoded_len()).sum()
}

/// Decodes per shape and profiling run (`CART_PROFILE=decode`).
const DECODE_PROFILE_OPS: usize = 100_000;

/// `CART_PROFILE=decode`: every shape of [`decode_shapes`] decoded `runs * 100,000` times
/// (`*decode_<shape>_all*`), and the one-add delta's `encoded_len` as often
/// (`*encoded_len_all*`).
fn profile_decode(runs: usize) {
    let shapes = decode_shapes();
    let n = runs * DECODE_PROFILE_OPS;
    for (id, (name, bytes)) in (1..).zip(&shapes) {
        let run = match *name {
            "add" => decode_add_all,
            "set" => decode_set_all,
            "remove" => decode_remove_all,
            "session" => decode_session_all,
            _ => decode_state10_all,
        };
        assert_eq!(run(bytes, n), n * id, "{name} decodes");
        println!("{name}: {} bytes, decoded {n} times", bytes.len());
    }
    let add: Body = wire::decode(&shapes[0].1).expect("decodes");
    let len = encoded_len_all(&add.payload, n);
    println!("add payload: encoded_len {} x {n}", len / n);
}

/// Local operations per profiling run (`CART_PROFILE=local`).
const LOCAL_PROFILE_OPS: usize = 100_000;

fn main() {
    if let Ok(items) = std::env::var("CART_PROFILE") {
        profile(&items);
        return;
    }
    print_sizes();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20)
        .configure_from_args();
    bench_merges(&mut c);
    bench_set(&mut c);
    bench_local_ops(&mut c);
    bench_state_merge(&mut c);
    c.final_summary();
}
