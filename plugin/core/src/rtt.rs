//! RTT distributions: fixed log-scale buckets of the kernel's smoothed RTT (`srtt`), per role,
//! and the quantiles of one gather interval interpolated within them (docs/metrics.md,
//! `container:rtt_buckets` and `container:rtt_quantiles`). A distribution is a fixed array:
//! its memory does not grow with the flows it counts.
#![forbid(unsafe_code)]

/// The buckets' upper bounds in µs (the kernel's resolution), inclusive: bucket `i` holds the
/// values above `BOUNDS_US[i - 1]` (0 for the first) up to and including `BOUNDS_US[i]`; one
/// more bucket, the last, holds everything above 1 s. Steps of 1, 2.5, 5 per decade, from
/// loopback (tens of µs) to a congested intercontinental path (hundreds of ms).
pub(crate) const BOUNDS_US: [u32; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// Number of buckets: the bounded ones and the last (`+Inf`).
pub(crate) const BUCKETS: usize = BOUNDS_US.len() + 1;

/// The quantiles written, as fractions.
pub(crate) const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// The bucket of an RTT of `us` µs.
#[inline]
pub(crate) fn bucket_of(us: u32) -> usize {
    // 14 comparisons without branches to mispredict (RTTs of one host vary widely).
    BOUNDS_US.iter().map(|&b| usize::from(us > b)).sum()
}

/// Counts of RTT samples per bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets(pub [u64; BUCKETS]);

impl Default for Buckets {
    fn default() -> Buckets {
        Buckets([0; BUCKETS])
    }
}

impl Buckets {
    /// Counts one sample of `us` µs.
    #[inline]
    pub fn record(&mut self, us: u32) {
        self.0[bucket_of(us)] += 1;
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Buckets) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// The counts of `self` beyond `before`'s (saturating: never below 0).
    pub fn since(&self, before: &Buckets) -> Buckets {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(before.0.iter()) {
            *a = a.saturating_sub(*b);
        }
        out
    }

    /// Number of samples.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q` quantile (0 < q <= 1) of the samples, in ms, or None without a sample. Found as
    /// Prometheus's `histogram_quantile` finds it: the bucket that holds the sample of rank
    /// `q * n`, then linear interpolation between its bounds (0 below the first), as if its
    /// samples were spread evenly. The true quantile of the samples lies in the same bucket, so
    /// the error is less than the bucket's width (at most 60 % of its upper bound: the bounds
    /// step by at most 2.5). In the last bucket (above 1 s) the answer is its lower bound, 1000.
    pub(crate) fn quantile_ms(&self, q: f64) -> Option<f64> {
        let n = self.total();
        if n == 0 {
            return None;
        }
        let rank = q * n as f64;
        let mut below = 0u64;
        for (i, &count) in self.0.iter().enumerate() {
            if count == 0 || ((below + count) as f64) < rank {
                below += count;
                continue;
            }
            let lo = if i == 0 { 0 } else { BOUNDS_US[i - 1] };
            let Some(&hi) = BOUNDS_US.get(i) else {
                return Some(f64::from(lo) / 1e3);
            };
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            let us = f64::from(lo) + f64::from(hi - lo) * within;
            // To the µs, the resolution of every time written in ms.
            return Some(us.round() / 1e3);
        }
        // Rounding left the rank above the total: the highest sample's bucket.
        let last = self.0.iter().rposition(|&c| c > 0)?;
        Some(f64::from(*BOUNDS_US.get(last).unwrap_or(&BOUNDS_US[BUCKETS - 2])) / 1e3)
    }
}

/// The RTT samples of both roles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RttBuckets {
    /// Of flows as client.
    pub client: Buckets,
    /// Of flows as server.
    pub server: Buckets,
}

impl RttBuckets {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &RttBuckets) {
        self.client.add(&other.client);
        self.server.add(&other.server);
    }

    /// The counts of `self` beyond `before`'s.
    pub fn since(&self, before: &RttBuckets) -> RttBuckets {
        RttBuckets {
            client: self.client.since(&before.client),
            server: self.server.since(&before.server),
        }
    }
}

/// What a container or pod writes about its RTT distribution at a gather.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RttDistribution {
    /// Samples since the series started (counters).
    pub cumulative: RttBuckets,
    /// Samples of this gather's interval (the quantiles' input).
    pub interval: RttBuckets,
}

impl RttDistribution {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &RttDistribution) {
        self.cumulative.add(&other.cumulative);
        self.interval.add(&other.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_values_above_the_previous_bound_up_to_its_own() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(50), 0);
        assert_eq!(bucket_of(51), 1);
        assert_eq!(bucket_of(1_000), 4);
        assert_eq!(bucket_of(1_001), 5);
        assert_eq!(bucket_of(20_000), 8, "20 ms: (10, 25]");
        assert_eq!(bucket_of(1_000_000), 13);
        assert_eq!(bucket_of(1_000_001), 14);
        assert_eq!(bucket_of(u32::MAX), BUCKETS - 1);
        // Every bound is the last value of its bucket.
        for (i, &b) in BOUNDS_US.iter().enumerate() {
            assert_eq!((bucket_of(b), bucket_of(b + 1)), (i, i + 1), "{b}");
        }
        assert!(BOUNDS_US.windows(2).all(|w| w[1] > w[0]));
        assert!(
            BOUNDS_US.windows(2).all(|w| w[1] * 2 <= w[0] * 5),
            "steps of 2.5 at most: the quantiles' error bound"
        );
    }

    fn of(samples: &[u32]) -> Buckets {
        let mut b = Buckets::default();
        for &s in samples {
            b.record(s);
        }
        b
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_of_their_rank() {
        assert_eq!(Buckets::default().quantile_ms(0.5), None);
        // 3 samples of about 1 ms in (1, 2.5] ms, 1 of 20 ms in (10, 25].
        let b = of(&[1_050, 1_100, 1_200, 20_100]);
        // p50: rank 2 of the 3 in (1, 2.5]: 1 + 1.5 * 2/3.
        assert_eq!(b.quantile_ms(0.5), Some(2.0));
        // p90: rank 3.6, the 4th sample's bucket: 10 + 15 * 0.6.
        assert_eq!(b.quantile_ms(0.9), Some(19.0));
        assert_eq!(b.quantile_ms(0.99), Some(24.4));
        assert_eq!(b.quantile_ms(1.0), Some(25.0));
        // One sample: its bucket's middle for p50.
        assert_eq!(of(&[30]).quantile_ms(0.5), Some(0.025));
        // Above 1 s: the last bound.
        assert_eq!(of(&[2_000_000]).quantile_ms(0.99), Some(1000.0));
        // Empty buckets before and between are skipped.
        let b = of(&[400, 400, 40_000, 40_000]);
        assert_eq!(b.quantile_ms(0.5), Some(0.5));
        assert_eq!(b.quantile_ms(0.75), Some(37.5));
    }

    #[test]
    fn the_quantile_is_in_the_bucket_of_the_true_one() {
        // Every sample set of a pseudo-random walk: the estimate and the true quantile (the
        // sample of rank ceil(q * n)) share a bucket.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..500 {
            let n = 1 + rand(200) as usize;
            let mut samples: Vec<u32> = (0..n)
                .map(|_| 10u32.pow(1 + rand(6) as u32) + rand(1000) as u32)
                .collect();
            let b = of(&samples);
            samples.sort_unstable();
            for q in QUANTILES {
                let rank = ((q * n as f64).ceil() as usize).max(1);
                let truth = samples[rank - 1];
                let got = b.quantile_ms(q).unwrap();
                let (lo, hi) = match bucket_of(truth) {
                    0 => (0.0, 0.05),
                    i if i == BUCKETS - 1 => (1000.0, 1000.0),
                    i => (
                        f64::from(BOUNDS_US[i - 1]) / 1e3,
                        f64::from(BOUNDS_US[i]) / 1e3,
                    ),
                };
                assert!(
                    got >= lo && got <= hi,
                    "q {q}, {truth} µs: {got} ms not in [{lo}, {hi}]"
                );
            }
        }
    }

    #[test]
    fn since_and_add_are_per_bucket() {
        let (a, b) = (of(&[10, 2_000, 2_000]), of(&[10, 2_000]));
        assert_eq!(a.since(&b), of(&[2_000]));
        assert_eq!(b.since(&a), Buckets::default(), "never below 0");
        let mut c = b;
        c.add(&of(&[2_000]));
        assert_eq!(c, a);
        assert_eq!(a.total(), 3);
    }
}

/// A container's or pod's [`RttDistribution`], boxed and allocated at its first sample: the
/// values it sits in are summed, sorted and moved per container at every gather, and 480 bytes
/// inline would make each of those moves cost more than all the rest of the values together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RttSlot(Option<Box<RttDistribution>>);

impl RttSlot {
    /// The distribution (all zero without a sample).
    pub fn get(&self) -> RttDistribution {
        self.0.as_deref().copied().unwrap_or_default()
    }

    /// The distribution, if it has ever had a sample.
    pub fn as_ref(&self) -> Option<&RttDistribution> {
        self.0.as_deref()
    }

    /// The distribution to add samples to (allocated now if need be).
    pub fn get_mut(&mut self) -> &mut RttDistribution {
        self.0.get_or_insert_with(Box::default)
    }

    /// Adds `other`'s counts (nothing is allocated when it has none).
    pub fn add(&mut self, other: &RttSlot) {
        if let Some(other) = other.as_ref() {
            self.get_mut().add(other);
        }
    }
}

impl From<RttDistribution> for RttSlot {
    fn from(d: RttDistribution) -> RttSlot {
        RttSlot(Some(Box::new(d)))
    }
}
