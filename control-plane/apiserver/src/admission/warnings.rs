//! Warnings admission attaches to a response (`Warning: 299 - "..."` headers, which kubectl
//! prints as `Warning: ...`), as kube's `warning.AddWarning`. They are gathered per request in
//! a task-local, so plugins need no handle on the response.

use std::cell::RefCell;
use std::future::Future;

tokio::task_local! {
    static WARNINGS: RefCell<Vec<String>>;
}

/// Adds a warning to the response of the request being served; outside a request it is logged.
pub fn add(message: impl Into<String>) {
    let message = message.into();
    let kept = WARNINGS.try_with(|warnings| {
        let mut warnings = warnings.borrow_mut();
        // kube deduplicates identical warnings of one request.
        if !warnings.contains(&message) {
            warnings.push(message.clone());
        }
    });
    if kept.is_err() {
        tracing::debug!(%message, "admission warning outside a request");
    }
}

/// Runs `request`, returning its output and the warnings added while it ran.
pub async fn collect<F: Future>(request: F) -> (F::Output, Vec<String>) {
    WARNINGS
        .scope(RefCell::new(Vec::new()), async {
            let output = request.await;
            let warnings = WARNINGS.with(|w| w.take());
            (output, warnings)
        })
        .await
}

/// The value of one `Warning` header: code 299, no agent, the text quoted with `"` and `\`
/// escaped; control characters, which headers cannot carry, become spaces.
pub fn header_value(message: &str) -> String {
    let mut quoted = String::with_capacity(message.len() + 8);
    quoted.push_str("299 - \"");
    for c in message.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            c if c.is_control() => quoted.push(' '),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn warnings_of_a_request_are_collected_once_each() {
        let ((), warnings) = collect(async {
            add("a");
            add("b \"x\"");
            add("a");
        })
        .await;
        assert_eq!(warnings, ["a", "b \"x\""]);
        assert_eq!(header_value(&warnings[1]), r#"299 - "b \"x\"""#);
        add("outside: dropped, not a panic");
    }
}
