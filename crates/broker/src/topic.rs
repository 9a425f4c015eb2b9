//! Topic matching exactly as RabbitMQ does it: keys and patterns are split on '.', empty words are
//! words, `*` matches exactly one word and `#` matches zero or more words.

/// True when `key` matches the topic binding `pattern`.
pub fn matches(pattern: &str, key: &str) -> bool {
    let p = words(pattern);
    let k = words(key);
    match_words(&p, &k)
}

/// RabbitMQ compat: the empty key has zero words, not one empty word.
fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

fn match_words(p: &[&str], k: &[&str]) -> bool {
    // Iterative matcher with backtracking on the last '#', linear in practice.
    let (mut pi, mut ki) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ki < k.len() {
        if pi < p.len() && p[pi] == "#" {
            star = Some((pi, ki));
            pi += 1;
        } else if pi < p.len() && (p[pi] == "*" || p[pi] == k[ki]) {
            pi += 1;
            ki += 1;
        } else if let Some((sp, sk)) = star {
            pi = sp + 1;
            ki = sk + 1;
            star = Some((sp, sk + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == "#" {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::matches;

    /// Proves the matcher agrees with RabbitMQ's documented and tested topic semantics.
    #[test]
    fn rabbitmq_topic_cases() {
        let yes = [
            ("#", ""),
            ("#", "a"),
            ("#", "a.b.c"),
            ("a.#", "a"),
            ("a.#", "a.b.c"),
            ("#.a", "a"),
            ("#.a", "b.a"),
            ("*.orange.*", "quick.orange.rabbit"),
            ("*.*.rabbit", "quick.orange.rabbit"),
            ("lazy.#", "lazy.orange.elephant"),
            ("lazy.#", "lazy"),
            ("a.*.b", "a..b"),
            ("a..b", "a..b"),
            ("a.#.b", "a.b"),
            ("a.#.b", "a.x.y.b"),
            ("#.#", "a"),
            ("#.*", "a.b"),
            ("*.#", "a"),
            ("", ""),
        ];
        for (p, k) in yes {
            assert!(matches(p, k), "{p:?} should match {k:?}");
        }
        let no = [
            ("*", "a.b"),
            ("*.orange.*", "quick.orange.male.rabbit"),
            ("*.orange.*", "orange"),
            ("a.*", "a"),
            ("a.*.b", "a.b"),
            ("lazy.#", "lazyx"),
            ("a", ""),
            ("", "a"),
            ("#.*", ""),
            ("a.#.b", "a.b.c"),
            ("*.*", "a"),
            ("*", ""),
        ];
        for (p, k) in no {
            assert!(!matches(p, k), "{p:?} should not match {k:?}");
        }
    }
}
