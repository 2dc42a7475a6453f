//! Natural ordering of worker ids, so that `worker-2` ranks before `worker-10`.

use std::cmp::Ordering;

/// Compares strings chunk by chunk, digit runs numerically.
pub fn natural(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.is_empty(), b.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let (ca, ra) = chunk(a);
        let (cb, rb) = chunk(b);
        let ord = match (ca.parse::<u128>(), cb.parse::<u128>()) {
            (Ok(x), Ok(y)) => x.cmp(&y).then(ca.len().cmp(&cb.len())),
            _ => ca.cmp(cb),
        };
        if ord != Ordering::Equal {
            return ord;
        }
        (a, b) = (ra, rb);
    }
}

fn chunk(s: &str) -> (&str, &str) {
    let digits = s.starts_with(|c: char| c.is_ascii_digit());
    let end = s
        .find(|c: char| c.is_ascii_digit() != digits)
        .unwrap_or(s.len());
    s.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_compare_as_numbers() {
        let mut ids = vec!["w-10", "w-2", "w-1", "a", "w-02"];
        ids.sort_by(|a, b| natural(a, b));
        assert_eq!(ids, vec!["a", "w-1", "w-2", "w-02", "w-10"]);
    }
}
