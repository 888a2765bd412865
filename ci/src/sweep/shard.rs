//! Which seeds a sweep runs: seed ranges, shards, and the shard a CI system or a Kubernetes
//! Indexed Job says this machine is.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Seeds `start` up to `end`, `end` excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRange {
    pub start: u64,
    pub end: u64,
}

impl SeedRange {
    /// Reads `A..B` (B excluded), `A..=B` (B included) or `N` (that seed alone).
    pub fn parse(text: &str) -> Result<SeedRange, String> {
        let text = text.trim();
        let number = |part: &str| {
            part.trim()
                .parse::<u64>()
                .map_err(|_| format!("seed range {text:?}: {part:?} is not a seed (a number)"))
        };
        let past = |last: u64| {
            last.checked_add(1)
                .ok_or_else(|| format!("seed range {text:?}: the last seed is too large"))
        };
        let (start, end) = if let Some((a, b)) = text.split_once("..=") {
            (number(a)?, past(number(b)?)?)
        } else if let Some((a, b)) = text.split_once("..") {
            (number(a)?, number(b)?)
        } else {
            let seed = number(text)?;
            (seed, past(seed)?)
        };
        if start > end {
            return Err(format!(
                "seed range {text:?} ends before it starts (use A..B with A <= B)"
            ));
        }
        Ok(SeedRange { start, end })
    }
}

impl fmt::Display for SeedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// Shard `index` of `count`: the seeds s with (s - start) % count == index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Reads `K/N`.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (k, n) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("shard {text:?} is not K/N (e.g. 0/4)"))?;
        let k = k
            .trim()
            .parse()
            .map_err(|_| format!("shard {text:?}: {k:?} is not a shard index"))?;
        let n = n
            .trim()
            .parse()
            .map_err(|_| format!("shard {text:?}: {n:?} is not a shard count"))?;
        Shard::new(k, n).map_err(|e| format!("shard {text:?}: {e}"))
    }

    pub fn new(index: u64, count: u64) -> Result<Shard, String> {
        if count == 0 {
            return Err("the shard count must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "shard index {index} is not below the shard count {count} (shards are 0 to {})",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// This shard's seeds of `range`, in increasing order.
    pub fn seeds(self, range: SeedRange) -> impl Iterator<Item = u64> {
        let step = usize::try_from(self.count).unwrap_or(usize::MAX);
        (range.start..range.end)
            .skip(usize::try_from(self.index).unwrap_or(usize::MAX))
            .step_by(step)
    }

    /// How many seeds of `range` this shard runs.
    pub fn len(self, range: SeedRange) -> u64 {
        let width = range.end - range.start;
        if width <= self.index {
            0
        } else {
            (width - self.index - 1) / self.count + 1
        }
    }
}

/// Which shard to run: `--shard`, else the variables of the systems that run jobs in
/// parallel; the whole range when none says. Also says where the shard came from.
pub fn pick_shard(
    flag: Option<Shard>,
    count_flag: Option<u64>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Shard, String), String> {
    if let Some(shard) = flag {
        if count_flag.is_some() {
            return Err("give either --shard K/N or --shard-count N, not both".into());
        }
        return Ok((shard, "--shard".into()));
    }
    let number = |name: &str, text: String| {
        text.trim()
            .parse::<u64>()
            .map_err(|_| format!("{name}={text:?} is not a number"))
    };
    let count = match (count_flag, env("FAULTLINE_SHARD_COUNT")) {
        (Some(n), _) => Some(("--shard-count", n)),
        (None, Some(text)) => Some((
            "FAULTLINE_SHARD_COUNT",
            number("FAULTLINE_SHARD_COUNT", text)?,
        )),
        (None, None) => None,
    };
    if let Some(index) = env("JOB_COMPLETION_INDEX") {
        let index = number("JOB_COMPLETION_INDEX", index)?;
        let (from, count) = count.ok_or(
            "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but not the shard count: \
             pass --shard-count N (the job's completions) or set FAULTLINE_SHARD_COUNT",
        )?;
        let shard = Shard::new(index, count)
            .map_err(|e| format!("JOB_COMPLETION_INDEX={index} with {from} {count}: {e}"))?;
        return Ok((shard, format!("JOB_COMPLETION_INDEX and {from}")));
    }
    if let Some((from, _)) = count {
        return Err(format!(
            "{from} needs JOB_COMPLETION_INDEX (set by a Kubernetes Indexed Job), which is not \
             set; elsewhere pass --shard K/N"
        ));
    }
    // (index variable, count variable, whether the index counts from 1)
    let systems = [
        ("CI_NODE_INDEX", "CI_NODE_TOTAL", true),
        ("CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", false),
        (
            "BUILDKITE_PARALLEL_JOB",
            "BUILDKITE_PARALLEL_JOB_COUNT",
            false,
        ),
    ];
    for (index_var, count_var, one_based) in systems {
        let Some(index) = env(index_var) else {
            continue;
        };
        let index = number(index_var, index)?;
        let count = env(count_var)
            .ok_or_else(|| format!("{index_var} is set but {count_var} is not"))
            .and_then(|text| number(count_var, text))?;
        let index = if one_based {
            index
                .checked_sub(1)
                .ok_or_else(|| format!("{index_var}=0: it counts from 1"))?
        } else {
            index
        };
        let shard =
            Shard::new(index, count).map_err(|e| format!("{index_var} and {count_var}: {e}"))?;
        return Ok((shard, format!("{index_var} and {count_var}")));
    }
    Ok((Shard::WHOLE, "none".into()))
}
