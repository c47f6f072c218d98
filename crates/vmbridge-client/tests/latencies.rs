//! `report::Latencies`, the log-linear latency histogram, against the exact nearest-rank
//! percentiles of a sorted copy of the same samples.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vmbridge_client::report::Latencies;

/// The quantiles checked: a grid of 1% steps plus the printed ones and the tails.
fn quantiles() -> Vec<f64> {
    let mut q: Vec<f64> = (0..=100).map(|i| f64::from(i) / 100.0).collect();
    q.extend([0.5, 0.9, 0.99, 0.999, 0.0001, 1.0]);
    q
}

/// Today's definition: rank `round((n - 1) * q)` of the ascending samples.
fn exact(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn histogram(v: &[u64]) -> Latencies {
    let mut h = Latencies::new();
    for &x in v {
        h.record(x);
    }
    h
}

/// Asserts every quantile of `v` is within `1/den` of the exact value, and exact below 64.
fn assert_within(v: &[u64], den: u128) {
    let h = histogram(v);
    let mut sorted = v.to_vec();
    sorted.sort_unstable();
    for q in quantiles() {
        let want = exact(&sorted, q);
        let got = h.percentile(q).expect("not empty");
        let err = u128::from(got.abs_diff(want));
        assert!(
            err * den <= u128::from(want),
            "q {q}: histogram {got}, exact {want} (n {})",
            v.len()
        );
        if want < 64 {
            assert_eq!(got, want, "q {q}: values below 64 are exact");
        }
    }
}

/// splitmix64: reproducible pseudo-random samples without a dependency.
fn random(seed: u64, n: usize, mut shape: impl FnMut(u64) -> u64) -> Vec<u64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            shape(z ^ (z >> 31))
        })
        .collect()
}

#[test]
fn values_below_64_are_exact() {
    let v: Vec<u64> = (0..64).rev().chain(0..64).chain([7, 7, 7, 63, 0]).collect();
    let h = histogram(&v);
    let mut sorted = v.clone();
    sorted.sort_unstable();
    for q in quantiles() {
        assert_eq!(h.percentile(q), Some(exact(&sorted, q)), "q {q}");
    }
}

#[test]
fn percentiles_are_within_1_64th_of_exact_nearest_rank_on_random_sets() {
    // Uniform over the whole range, log-uniform (every power of two equally likely), and
    // latency-like (microseconds with a long tail).
    assert_within(&random(1, 10_000, |z| z), 64);
    assert_within(&random(2, 10_000, |z| z >> (z % 64)), 64);
    assert_within(
        &random(3, 10_000, |z| 1_000 + (z % 50_000) * (1 + z % 7)),
        64,
    );
    for n in [1, 2, 3, 10, 99, 100, 101] {
        assert_within(&random(n as u64, n, |z| z >> (z % 64)), 64);
    }
}

#[test]
fn percentiles_are_within_1_32nd_of_exact_nearest_rank_on_adversarial_sets() {
    let powers: Vec<u64> = (0..64).map(|e| 1u64 << e).collect();
    let around_powers: Vec<u64> = (1..64)
        .flat_map(|e| {
            let p = 1u64 << e;
            [p - 1, p, p + 1]
        })
        .collect();
    // Both ends of sub-buckets above 64: where the midpoint is farthest from the value.
    let bucket_edges: Vec<u64> = (6..64)
        .flat_map(|e| {
            let w = 1u64 << (e - 5);
            (0..32u64).flat_map(move |k| {
                let lo = (32 + k) * w;
                [lo, lo + (w - 1)]
            })
        })
        .collect();
    for v in [
        vec![0],
        vec![u64::MAX],
        vec![12_345],
        vec![0, u64::MAX],
        vec![u64::MAX; 5],
        vec![0; 1000],
        [vec![1; 999], vec![u64::MAX]].concat(),
        [vec![u64::MAX - 1; 999], vec![0]].concat(),
        powers,
        around_powers,
        bucket_edges,
    ] {
        assert_within(&v, 32);
        assert_within(&v, 64);
    }
}

#[test]
fn max_and_min_are_exact() {
    for v in [
        vec![1_000_001, 1_000_000, 999_999],
        vec![u64::MAX - 1, 64, 65],
        random(4, 1000, |z| z >> (z % 64)),
    ] {
        let h = histogram(&v);
        let (lo, hi) = (*v.iter().min().unwrap(), *v.iter().max().unwrap());
        assert_eq!(h.percentile(1.0), Some(hi));
        assert_eq!(h.max(), Some(hi));
        assert_eq!(h.percentile(0.0), Some(lo));
        assert_eq!(h.min(), Some(lo));
        assert_eq!(h.len(), v.len() as u64);
    }
}

#[test]
fn merge_equals_recording_both() {
    let a = random(5, 3000, |z| z >> (z % 64));
    let b = random(6, 500, |z| z % 10_000);
    let mut merged = histogram(&a);
    merged.merge(&histogram(&b));
    let both = histogram(&[a, b].concat());
    assert_eq!(merged.len(), both.len());
    assert_eq!((merged.min(), merged.max()), (both.min(), both.max()));
    for q in quantiles() {
        assert_eq!(merged.percentile(q), both.percentile(q), "q {q}");
    }
    assert_eq!(merged.summary_us(), both.summary_us());
    // Merging an empty histogram, or into one, changes nothing.
    let mut into_empty = Latencies::new();
    into_empty.merge(&both);
    into_empty.merge(&Latencies::new());
    assert_eq!(into_empty.summary_us(), both.summary_us());
    assert_eq!(
        (into_empty.min(), into_empty.max()),
        (both.min(), both.max())
    );
}

#[test]
fn empty_gives_none_and_n_a() {
    let h = Latencies::default();
    assert!(h.is_empty());
    assert_eq!(h.len(), 0);
    assert_eq!((h.percentile(0.5), h.min(), h.max()), (None, None, None));
    assert_eq!(h.summary_us(), "n/a");
}

#[test]
fn summary_keeps_the_printed_format_in_microseconds() {
    let h = histogram(&[1_500, 2_000, 2_500, 40, 3_000_000]);
    assert!(!h.is_empty());
    // Ranks 2, 4, 4, 4: 2,000 ns lies in the bucket 1,984..2,016, whose midpoint it is.
    assert_eq!(
        h.summary_us(),
        "p50 2.0  p90 3000.0  p99 3000.0  max 3000.0"
    );
}

#[test]
fn record_does_not_allocate() {
    let samples = random(7, 100_000, |z| z >> (z % 64));
    let mut h = Latencies::new();
    let before = allocations_on_this_thread();
    for &x in &samples {
        h.record(x);
    }
    assert_eq!(allocations_on_this_thread(), before);
    assert_eq!(h.len(), 100_000);
}

/// Counts the allocations of each thread (the tests run on several threads at once).
struct Counting;

std::thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn allocations_on_this_thread() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: GlobalAlloc's contract is met by forwarding every call unchanged to `System`;
// the counter is a const-initialised thread-local without a destructor, so touching it
// never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's `layout` obligations (non-zero size) are passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout` (every allocation
        // goes through `alloc` above), as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;
