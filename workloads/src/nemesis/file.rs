//! Reading a schedule from a file and checking it against a cluster, with errors that name the
//! entry at fault (1-based, as a person counts them in the file). Never panics on a file.

use std::collections::BTreeMap;

use faultline_sim::InvalidFault;
use faultline_store::node::protocol::NodeId;

use super::{Aim, PointPick, Schedule, SwarmParams, TimedFault};

impl Schedule {
    /// Reads a schedule written by a run (`schedule.json`) or by hand: `{"faults": [...]}`.
    pub fn from_json(text: &str) -> Result<Schedule, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let object = value
            .as_object()
            .ok_or("a schedule is an object with a \"faults\" list")?;
        if let Some(key) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "faults" | "swarm"))
        {
            return Err(format!(
                "unknown field {key:?}; a schedule has \"faults\" (and \"swarm\")"
            ));
        }
        let entries = object
            .get("faults")
            .and_then(|f| f.as_array())
            .ok_or("a schedule needs a \"faults\" list")?;
        let mut faults = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let fault: TimedFault = serde_json::from_value(entry.clone())
                .map_err(|e| format!("entry {} ({entry}): {e}", i + 1))?;
            faults.push(fault);
        }
        let swarm = match object.get("swarm") {
            None | Some(serde_json::Value::Null) => None,
            Some(s) => Some(
                serde_json::from_value::<SwarmParams>(s.clone())
                    .map_err(|e| format!("\"swarm\": {e}"))?,
            ),
        };
        Ok(Schedule { faults, swarm })
    }
}

pub(super) fn validate(schedule: &Schedule, members: &[NodeId]) -> Result<(), InvalidFault> {
    let mut aimed: BTreeMap<u32, u32> = BTreeMap::new();
    let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
    let mut picks: BTreeMap<u32, u32> = BTreeMap::new();
    let mut last_ms = 0;
    for (i, t) in schedule.faults.iter().enumerate() {
        let invalid = |reason: String| InvalidFault {
            fault: t.fault.clone(),
            reason: format!("entry {} (at {}ms): {reason}", i + 1, t.at_ms),
        };
        t.fault
            .validate(members)
            .map_err(|e| invalid(e.reason.clone()))?;
        if t.at_ms < last_ms {
            return Err(invalid(format!(
                "faults must be in time order; the entry before is at {last_ms}ms"
            )));
        }
        last_ms = t.at_ms;
        let before_in_episode = t.episode.map_or(0, |e| *seen.get(&e).unwrap_or(&0));
        if let Some(aim) = t.aim {
            if t.fault.aimed_at(1).is_none() {
                return Err(invalid(
                    "only a fault that names one member can be aimed".to_string(),
                ));
            }
            if let Aim::Same(n) = aim {
                let earlier = t.episode.map_or(0, |e| *aimed.get(&e).unwrap_or(&0));
                if n == 0 || n > earlier {
                    return Err(invalid(format!(
                        "aim {{\"same\": {n}}} needs {n} earlier aimed fault(s) in its episode \
                         (it has {earlier})"
                    )));
                }
            }
            if let Some(e) = t.episode {
                *aimed.entry(e).or_default() += 1;
            }
        }
        if let Some(pick) = t.pick {
            if t.fault.at_point("").is_none() {
                return Err(invalid(
                    "only a crash-point fault (failpoint, clear_failpoint) can pick its point"
                        .to_string(),
                ));
            }
            let earlier = t.episode.map_or(0, |e| *picks.get(&e).unwrap_or(&0));
            if pick == PointPick::Picked && earlier == 0 {
                return Err(invalid(
                    "point \"picked\" needs an earlier {\"reached\": n} pick in its episode"
                        .to_string(),
                ));
            }
            if let (PointPick::Reached(_), Some(e)) = (pick, t.episode) {
                *picks.entry(e).or_default() += 1;
            }
        }
        if t.wait.is_some() && (t.episode.is_none() || before_in_episode == 0) {
            return Err(invalid(
                "a fault that waits for a new leader must follow another fault of its episode"
                    .to_string(),
            ));
        }
        if let Some(e) = t.episode {
            *seen.entry(e).or_default() += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_schedule_file_is_an_error_naming_the_entry() {
        let bad_kind =
            r#"{"faults":[{"at_ms":100,"fault":"heal"},{"at_ms":200,"fault":"crashh","node":1}]}"#;
        let error = Schedule::from_json(bad_kind).unwrap_err();
        assert!(error.starts_with("entry 2 "), "{error}");
        assert!(error.contains("crashh"), "{error}");
        assert!(Schedule::from_json("[1,2]")
            .unwrap_err()
            .contains("\"faults\""));
        assert!(Schedule::from_json("{\"faults\": [], \"fautls\": 1}")
            .unwrap_err()
            .contains("fautls"));
        assert!(Schedule::from_json("{")
            .unwrap_err()
            .starts_with("not JSON"));

        let check = |json: &str| {
            Schedule::from_json(json)
                .unwrap()
                .validate(&[1, 2, 3])
                .map_err(|e| e.to_string())
        };
        let unordered = r#"{"faults":[{"at_ms":300,"fault":"heal"},{"at_ms":200,"fault":"heal"}]}"#;
        assert!(check(unordered).unwrap_err().contains("entry 2 (at 200ms)"));
        let stray_same =
            r#"{"faults":[{"at_ms":1,"fault":"resume","node":1,"episode":1,"aim":{"same":1}}]}"#;
        assert!(check(stray_same).unwrap_err().contains("needs 1 earlier"));
        let aimed_heal = r#"{"faults":[{"at_ms":1,"fault":"heal","aim":"leader"}]}"#;
        assert!(check(aimed_heal).unwrap_err().contains("names one member"));
        let lone_wait = r#"{"faults":[{"at_ms":1,"fault":"resume","node":1,"wait":"new_leader"}]}"#;
        assert!(check(lone_wait).unwrap_err().contains("must follow"));
        let good = r#"{"faults":[
            {"at_ms":1000,"fault":"pause","node":1,"episode":1,"aim":"leader"},
            {"at_ms":5000,"fault":"resume","node":1,"episode":1,"aim":{"same":1},"wait":"new_leader"}]}"#;
        assert_eq!(check(good), Ok(()));
        let schedule = Schedule::from_json(good).unwrap();
        let again = serde_json::to_string(&schedule).unwrap();
        assert_eq!(Schedule::from_json(&again).unwrap(), schedule);
    }
}
