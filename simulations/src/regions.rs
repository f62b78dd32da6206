//! Regions: where nodes live and how far apart they are (one-way latency between regions),
//! from the built-in five-region default or a user's `--regions-file`.
//!
//! This module only describes geography; sending, jitter, loss and partitions live in
//! `network.rs`.

use serde::Deserialize;
use std::fmt;

/// One region: its name, its share of the nodes and its internal round trip.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    /// The region's name, also the prefix of its nodes' ids (`us-east-3`).
    pub name: String,
    /// Relative share of the nodes placed in this region.
    pub weight: f64,
}

/// A set of regions and the one-way latency between every ordered pair.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionMap {
    regions: Vec<Region>,
    /// `one_way_ms[a][b]`: median one-way latency from a node in `a` to a node in `b`.
    one_way_ms: Vec<Vec<f64>>,
    /// `loss[a][b]`: probability that a message from `a` to `b` is lost (on top of the
    /// network-wide loss); empty when the file gives none.
    loss: Vec<Vec<f64>>,
}

/// Why a regions file was refused.
#[derive(Debug)]
pub struct RegionsError(pub String);

impl fmt::Display for RegionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "regions file: {}", self.0)
    }
}

impl std::error::Error for RegionsError {}

/// Round trip between two nodes of the same region (across availability zones), in ms.
pub const DEFAULT_INTRA_REGION_RTT_MS: f64 = 1.0;

/// The default regions, in the order `--regions R` takes the first `R` of them.
pub const DEFAULT_REGION_NAMES: [&str; 5] =
    ["us-east", "us-west", "eu-west", "ap-southeast", "sa-east"];

/// Round trips between the default regions, in ms, in [`DEFAULT_REGION_NAMES`] order.
///
/// Source: the public AWS inter-region round-trip medians published by cloudping.co
/// (us-east-1 N. Virginia, us-west-2 Oregon, eu-west-1 Ireland, ap-southeast-1 Singapore,
/// sa-east-1 São Paulo), rounded to the millisecond. Real paths are asymmetric only by a few
/// ms, so the matrix is symmetric.
const DEFAULT_RTT_MS: [[f64; 5]; 5] = [
    //  us-east us-west eu-west ap-se  sa-east
    [0.0, 67.0, 68.0, 214.0, 114.0],
    [67.0, 0.0, 122.0, 163.0, 176.0],
    [68.0, 122.0, 0.0, 170.0, 176.0],
    [214.0, 163.0, 170.0, 0.0, 325.0],
    [114.0, 176.0, 176.0, 325.0, 0.0],
];

impl RegionMap {
    /// The first `count` (1..=5) of the default five regions, equally weighted.
    pub fn default_regions(count: usize) -> Result<RegionMap, RegionsError> {
        if !(1..=DEFAULT_REGION_NAMES.len()).contains(&count) {
            return Err(RegionsError(format!(
                "--regions must be 1..=5 with the default regions, got {count}"
            )));
        }
        let regions = DEFAULT_REGION_NAMES[..count]
            .iter()
            .map(|n| Region {
                name: (*n).to_string(),
                weight: 1.0,
            })
            .collect();
        let rtt: Vec<Vec<f64>> = (0..count)
            .map(|a| (0..count).map(|b| DEFAULT_RTT_MS[a][b]).collect())
            .collect();
        Ok(RegionMap::from_rtt(
            regions,
            &rtt,
            DEFAULT_INTRA_REGION_RTT_MS,
        ))
    }

    /// Parses a regions file (TOML). See `simulations/regions.example.toml`:
    ///
    /// ```toml
    /// intra_region_rtt_ms = 1.0          # optional
    /// [[regions]]
    /// name = "eu-west"
    /// weight = 2.0                       # share of the nodes
    /// lat = 53.3                         # only with [distance]
    /// lon = -6.3
    /// # then either a round-trip matrix in region order ...
    /// rtt_ms = [[0, 20], [20, 0]]
    /// # optional: per region pair (from row to column) message loss
    /// loss = [[0, 0.01], [0.01, 0]]
    /// # ... or coordinates: round trip = base_rtt_ms + great-circle km / km_per_ms
    /// [distance]
    /// base_rtt_ms = 2.0
    /// km_per_ms = 100.0
    /// ```
    pub fn from_toml(text: &str) -> Result<RegionMap, RegionsError> {
        let file: RegionsFile =
            toml::from_str(text).map_err(|e| RegionsError(e.message().to_string()))?;
        let n = file.regions.len();
        if n == 0 {
            return Err(RegionsError("no [[regions]]".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &file.regions {
            if r.name.is_empty()
                || r.name.len() > 40
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(RegionsError(format!(
                    "region name {:?} must be 1..=40 chars of [A-Za-z0-9-]",
                    r.name
                )));
            }
            if !names.insert(r.name.as_str()) {
                return Err(RegionsError(format!("region {:?} listed twice", r.name)));
            }
            if !(r.weight.is_finite() && r.weight >= 0.0) {
                return Err(RegionsError(format!("region {:?}: bad weight", r.name)));
            }
        }
        if file.regions.iter().all(|r| r.weight == 0.0) {
            return Err(RegionsError("every weight is 0".into()));
        }
        let intra = file
            .intra_region_rtt_ms
            .unwrap_or(DEFAULT_INTRA_REGION_RTT_MS);
        let rtt = match (&file.rtt_ms, &file.distance) {
            (Some(_), Some(_)) => {
                return Err(RegionsError(
                    "give either rtt_ms or [distance], not both".into(),
                ));
            }
            (None, None) => {
                return Err(RegionsError(
                    "give a round-trip matrix rtt_ms or coordinates with [distance]".into(),
                ));
            }
            (Some(m), None) => {
                if m.len() != n || m.iter().any(|row| row.len() != n) {
                    return Err(RegionsError(format!("rtt_ms must be {n}x{n}")));
                }
                if m.iter().flatten().any(|v| !(v.is_finite() && *v >= 0.0)) {
                    return Err(RegionsError("rtt_ms values must be >= 0".into()));
                }
                m.clone()
            }
            (None, Some(d)) => {
                if !(d.km_per_ms > 0.0 && d.base_rtt_ms >= 0.0) {
                    return Err(RegionsError(
                        "[distance] needs km_per_ms > 0 and base_rtt_ms >= 0".into(),
                    ));
                }
                let mut coords = Vec::with_capacity(n);
                for r in &file.regions {
                    match (r.lat, r.lon) {
                        (Some(lat), Some(lon)) => coords.push((lat, lon)),
                        _ => {
                            return Err(RegionsError(format!(
                                "region {:?} needs lat and lon with [distance]",
                                r.name
                            )));
                        }
                    }
                }
                (0..n)
                    .map(|a| {
                        (0..n)
                            .map(|b| {
                                if a == b {
                                    0.0
                                } else {
                                    d.base_rtt_ms
                                        + great_circle_km(coords[a], coords[b]) / d.km_per_ms
                                }
                            })
                            .collect()
                    })
                    .collect()
            }
        };
        let loss = match file.loss {
            None => Vec::new(),
            Some(m) => {
                if m.len() != n || m.iter().any(|row| row.len() != n) {
                    return Err(RegionsError(format!("loss must be {n}x{n}")));
                }
                if m.iter().flatten().any(|v| !(0.0..1.0).contains(v)) {
                    return Err(RegionsError("loss values must be in [0, 1)".into()));
                }
                m
            }
        };
        let regions = file
            .regions
            .into_iter()
            .map(|r| Region {
                name: r.name,
                weight: r.weight,
            })
            .collect();
        let mut map = RegionMap::from_rtt(regions, &rtt, intra);
        map.loss = loss;
        Ok(map)
    }

    fn from_rtt(regions: Vec<Region>, rtt: &[Vec<f64>], intra_rtt: f64) -> RegionMap {
        let n = regions.len();
        let one_way_ms = (0..n)
            .map(|a| {
                (0..n)
                    .map(|b| {
                        if a == b {
                            intra_rtt / 2.0
                        } else {
                            // A matrix may be given one-sided; take the larger of the two.
                            rtt[a][b].max(rtt[b][a]) / 2.0
                        }
                    })
                    .collect()
            })
            .collect();
        RegionMap {
            regions,
            one_way_ms,
            loss: Vec::new(),
        }
    }

    /// Keeps only the first `count` regions (for `--regions R` with a regions file).
    pub fn truncate(&mut self, count: usize) -> Result<(), RegionsError> {
        if count == 0 || count > self.regions.len() {
            return Err(RegionsError(format!(
                "--regions {count}, but the file defines {}",
                self.regions.len()
            )));
        }
        self.regions.truncate(count);
        self.one_way_ms.truncate(count);
        for row in &mut self.one_way_ms {
            row.truncate(count);
        }
        if !self.loss.is_empty() {
            self.loss.truncate(count);
            for row in &mut self.loss {
                row.truncate(count);
            }
        }
        Ok(())
    }

    /// The regions, in order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether there is no region (never true for a constructed map).
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// The region's name.
    pub fn name(&self, region: usize) -> &str {
        &self.regions[region].name
    }

    /// Median one-way latency from `a` to `b`, in ms.
    pub fn one_way_ms(&self, a: usize, b: usize) -> f64 {
        self.one_way_ms[a][b]
    }

    /// The loss probability from `a` to `b` the regions file sets (0 by default).
    pub fn loss(&self, a: usize, b: usize) -> f64 {
        self.loss
            .get(a)
            .and_then(|row| row.get(b))
            .copied()
            .unwrap_or(0.0)
    }

    /// The largest one-way latency between any two regions: the floor under any
    /// cluster-wide propagation time.
    pub fn latency_floor_ms(&self) -> f64 {
        self.one_way_ms
            .iter()
            .flatten()
            .copied()
            .fold(0.0, f64::max)
    }

    /// The region of each of `nodes` node slots, in proportion to the weights (largest
    /// remainder), interleaved so that any prefix of the slots is spread over the regions too.
    pub fn place(&self, nodes: usize) -> Vec<usize> {
        let total: f64 = self.regions.iter().map(|r| r.weight).sum();
        let quotas: Vec<f64> = self
            .regions
            .iter()
            .map(|r| r.weight / total * nodes as f64)
            .collect();
        let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
        let mut rest: Vec<usize> = (0..self.regions.len()).collect();
        rest.sort_by(|&a, &b| {
            let ra = quotas[a] - quotas[a].floor();
            let rb = quotas[b] - quotas[b].floor();
            rb.total_cmp(&ra).then(a.cmp(&b))
        });
        let mut missing = nodes - counts.iter().sum::<usize>();
        for r in rest {
            if missing == 0 {
                break;
            }
            counts[r] += 1;
            missing -= 1;
        }
        // Deal the slots round-robin over the regions that still have quota.
        let mut out = Vec::with_capacity(nodes);
        while out.len() < nodes {
            for (r, c) in counts.iter_mut().enumerate() {
                if *c > 0 {
                    *c -= 1;
                    out.push(r);
                }
            }
        }
        out
    }
}

/// Great-circle distance in km between two `(lat, lon)` points in degrees (haversine).
pub fn great_circle_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0;
    let (la1, lo1) = (a.0.to_radians(), a.1.to_radians());
    let (la2, lo2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionsFile {
    intra_region_rtt_ms: Option<f64>,
    rtt_ms: Option<Vec<Vec<f64>>>,
    loss: Option<Vec<Vec<f64>>>,
    distance: Option<DistanceModel>,
    regions: Vec<RegionEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionEntry {
    name: String,
    #[serde(default = "one")]
    weight: f64,
    lat: Option<f64>,
    lon: Option<f64>,
}

fn one() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DistanceModel {
    base_rtt_ms: f64,
    km_per_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_regions_are_symmetric_and_the_floor_is_singapore_to_sao_paulo() {
        let m = RegionMap::default_regions(5).unwrap();
        assert_eq!(m.one_way_ms(3, 4), 162.5);
        assert_eq!(m.one_way_ms(4, 3), 162.5);
        assert_eq!(m.latency_floor_ms(), 162.5);
        assert_eq!(m.one_way_ms(0, 0), 0.5);
        assert!(RegionMap::default_regions(6).is_err());
    }

    #[test]
    fn placement_follows_weights_and_interleaves() {
        let m = RegionMap::from_toml(
            r#"
            rtt_ms = [[0, 10], [10, 0]]
            loss = [[0, 0.05], [0, 0]]
            [[regions]]
            name = "a"
            weight = 3
            [[regions]]
            name = "b"
            "#,
        )
        .unwrap();
        let p = m.place(8);
        assert_eq!(p.iter().filter(|&&r| r == 0).count(), 6);
        assert_eq!(&p[..2], &[0, 1]);
        assert_eq!((m.loss(0, 1), m.loss(1, 0)), (0.05, 0.0));
    }

    #[test]
    fn the_example_regions_file_parses() {
        let m = RegionMap::from_toml(include_str!("../regions.example.toml")).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m.name(2), "us-east");
        assert!(m.latency_floor_ms() > 30.0);
    }

    #[test]
    fn coordinates_give_base_plus_distance_over_speed() {
        let m = RegionMap::from_toml(
            r#"
            [distance]
            base_rtt_ms = 2.0
            km_per_ms = 100.0
            [[regions]]
            name = "dublin"
            lat = 53.35
            lon = -6.26
            [[regions]]
            name = "frankfurt"
            lat = 50.11
            lon = 8.68
            "#,
        )
        .unwrap();
        let km = great_circle_km((53.35, -6.26), (50.11, 8.68));
        assert!((km - 1088.0).abs() < 15.0, "{km}");
        assert!((m.one_way_ms(0, 1) - (2.0 + km / 100.0) / 2.0).abs() < 1e-9);
        assert!(RegionMap::from_toml("[[regions]]\nname = \"x\"").is_err());
    }
}
