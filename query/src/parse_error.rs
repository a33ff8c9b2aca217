//! Parse errors in Prometheus' shape (`parse error: ...`), with a position where we can find one.

/// Describes why `q` does not parse. `promql-parser` reports grammar errors without a position,
/// so when it gives none we point at the first unbalanced bracket or quote, which is where most
/// hand-written queries go wrong.
pub fn describe(q: &str, err: &str) -> String {
    match first_unbalanced(q) {
        Some((pos, what)) => format!("1:{}: parse error: {err} ({what})", pos + 1),
        None => format!("parse error: {err}"),
    }
}

fn first_unbalanced(q: &str) -> Option<(usize, &'static str)> {
    let mut stack: Vec<(usize, char)> = Vec::new();
    let mut quote: Option<(usize, char)> = None;
    let mut escaped = false;
    for (i, c) in q.char_indices() {
        if let Some((_, qc)) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && qc != '`' {
                escaped = true;
            } else if c == qc {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some((i, c)),
            '(' | '[' | '{' => stack.push((i, c)),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match stack.pop() {
                    Some((_, open)) if open == want => {}
                    _ => return Some((i, "unexpected closing bracket")),
                }
            }
            _ => {}
        }
    }
    if let Some((i, _)) = quote {
        return Some((i, "unterminated quoted string"));
    }
    stack.pop().map(|(i, _)| (i, "unclosed bracket"))
}
