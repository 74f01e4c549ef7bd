//! Bounding text that comes from outside — annotations people set, pod and container names,
//! registry errors, other objects' values — before it enters a status, a condition or an
//! Event. etcd stores an object of at most 1.5 MiB: a 256 KiB `rewind.dev/requested-by`
//! copied into several status fields, or a message listing a thousand pods, must not make
//! every later status write fail. A cut text ends with [`MARKER`], so nobody mistakes it for
//! the whole.

/// Ends every cut text.
pub const MARKER: &str = "…[truncated]";

/// Longest name-like value copied into status: who asked (`requested-by`), an annotation
/// value, a version someone asked for. A Kubernetes name is at most 253 characters.
pub const NAME_MAX: usize = 253;

/// Longest message: conditions, failures, rollbacks, Events (an Event's note holds 1 KiB).
pub const MESSAGE_MAX: usize = 1000;

/// Longest piece of a message that comes from elsewhere (a registry's error, say), so the
/// rest of the message still fits.
pub const DETAIL_MAX: usize = 300;

/// `s` if it has at most `max` bytes, else its start (cut on a char boundary) followed by
/// [`MARKER`], `max` bytes in all (or just the marker's, if `max` is smaller than it).
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(MARKER.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARKER}", &s[..end])
}

/// Like [`bounded`], for a value that is kept to be compared later (the annotation values in
/// `status.handled`): when cut, a checksum of the whole value goes in the marker, so two long
/// values that differ only after the cut still differ. The checksum (FNV-1a, 64 bits) is
/// fixed, so an upgraded operator computes the same one.
pub fn bounded_key(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let sum = fnv1a(s.as_bytes());
    let tail = format!("…[truncated {sum:016x}]");
    let mut end = max.saturating_sub(tail.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{tail}", &s[..end])
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_with_the_marker() {
        assert_eq!(bounded("alice", NAME_MAX), "alice");
        let long = "a".repeat(256 * 1024);
        let cut = bounded(&long, NAME_MAX);
        assert_eq!(cut.len(), NAME_MAX);
        assert!(cut.ends_with(MARKER), "{cut}");
        // Never inside a character: é is two bytes.
        let accents = "é".repeat(300);
        let cut = bounded(&accents, 101);
        assert!(cut.len() <= 101 && cut.ends_with(MARKER));
        assert_eq!(bounded(&accents, 3), MARKER);
    }

    #[test]
    fn keys_of_long_values_differ_when_the_values_do() {
        let a = format!("{}a", "x".repeat(1000));
        let b = format!("{}b", "x".repeat(1000));
        let (ka, kb) = (bounded_key(&a, NAME_MAX), bounded_key(&b, NAME_MAX));
        assert_ne!(ka, kb);
        assert!(ka.len() <= NAME_MAX && ka.contains("[truncated "), "{ka}");
        assert_eq!(bounded_key(&a, NAME_MAX), ka, "stable");
        assert_eq!(bounded_key("1.0.0", NAME_MAX), "1.0.0");
        // Known FNV-1a 64 value: the checksum must not change between versions.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
