//! `ListTasks` answers cut down to the caller's own tasks (rule effect `allow_originator`):
//! an agent lists every task it holds, whoever created it. Pure: the caller says, per task id,
//! whether the acting identity originated it (the conversation table knows).

use serde_json::Value;

/// What filtering did to one answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Filtered {
    /// The new body; `None` when nothing was withheld (the answer passes byte for byte).
    pub body: Option<Vec<u8>>,
    pub kept: u32,
    pub withheld: u32,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Filters a `ListTasks` answer: a JSON-RPC response whose `result` is a `ListTasksResponse`,
/// or (`rest`) the `ListTasksResponse` itself. Tasks `owns` rejects — and tasks without a
/// string `id`, which nobody can be shown to own — are removed; when any is, `totalSize`
/// (if present) becomes the number kept, so the answer does not count other callers' tasks.
/// A JSON-RPC error passes unchanged. An answer that cannot be read unambiguously (not JSON,
/// a repeated key, a `result` or `tasks` of the wrong type) is an error: the caller must not
/// pass what it could not filter.
pub fn filter_task_list(body: &[u8], rest: bool, mut owns: impl FnMut(&str) -> bool) -> Result<Filtered, String> {
    // The client's parser may read another `tasks` than ours if a key repeats.
    tollgate_core::wire::jsonrpc::check_no_duplicate_keys(body)?;
    let mut doc: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let unchanged = |kept: usize| Filtered { body: None, kept: count(kept), withheld: 0 };
    let list = if rest {
        &mut doc
    } else {
        let Some(envelope) = doc.as_object_mut() else { return Err("not a JSON-RPC response object".into()) };
        match envelope.get_mut("result") {
            Some(result) => result,
            // An error response lists nothing.
            None => return Ok(unchanged(0)),
        }
    };
    let Some(list) = list.as_object_mut() else { return Err("the task list is not an object".into()) };
    let tasks = match list.get_mut("tasks") {
        None | Some(Value::Null) => return Ok(unchanged(0)),
        Some(Value::Array(tasks)) => tasks,
        Some(_) => return Err("`tasks` is not an array".into()),
    };
    let before = tasks.len();
    tasks.retain(|task| task.get("id").and_then(Value::as_str).is_some_and(&mut owns));
    let kept = tasks.len();
    let withheld = before.saturating_sub(kept);
    if withheld == 0 {
        return Ok(unchanged(kept));
    }
    if list.contains_key("totalSize") {
        list.insert("totalSize".into(), Value::from(kept));
    }
    let body = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
    Ok(Filtered { body: Some(body), kept: count(kept), withheld: count(withheld) })
}

#[cfg(test)]
#[path = "listing_tests.rs"]
mod tests;
