//! Sorting a line's written tags by key in place (keys compared as readers unescape them),
//! keeping the last of equal keys, without allocating.

use std::cmp::Ordering;

/// How many tags a line sorts without allocating (and the encoder indexes). More is a
/// programming error (a `debug_assert` fires) but is still encoded correctly, at the cost of an
/// allocation.
pub(super) const MAX_TAGS: usize = 16;

/// `a.cmp(b)` for short keys that usually differ early, without a call to `memcmp`.
#[inline]
pub(super) fn cmp_bytes(a: &[u8], b: &[u8]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// Compares two written (escaped) keys as they are read back: `\,`, `\=` and `\ ` stand for
/// the character, any other backslash for itself.
pub(super) fn cmp_unescaped(a: &[u8], b: &[u8]) -> Ordering {
    fn unescaped(k: &[u8]) -> impl Iterator<Item = u8> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            let b = *k.get(i)?;
            i += 1;
            if b == b'\\' {
                if let Some(&n @ (b',' | b'=' | b' ')) = k.get(i) {
                    i += 1;
                    return Some(n);
                }
            }
            Some(b)
        })
    }
    unescaped(a).cmp(unescaped(b))
}

/// One written tag `,key=value`: where it starts, where its key ends, where it ends, and
/// whether its key has a backslash.
#[derive(Clone, Copy, Default)]
pub(super) struct Segment {
    pub(super) start: usize,
    pub(super) key_end: usize,
    pub(super) end: usize,
    pub(super) escaped: bool,
}

impl Segment {
    /// The tag written at `start`. A backslash always takes the next byte with it (the encoder
    /// never writes a lone backslash before `,` or `=`), so scanning is unambiguous.
    pub(super) fn at(buf: &[u8], start: usize) -> Self {
        let mut seg = Segment {
            start,
            key_end: 0,
            end: buf.len(),
            escaped: false,
        };
        let mut i = start + 1;
        while i < buf.len() {
            match buf[i] {
                b'\\' => {
                    seg.escaped |= seg.key_end == 0;
                    i += 2;
                }
                b'=' if seg.key_end == 0 => {
                    seg.key_end = i;
                    i += 1;
                }
                b',' => {
                    seg.end = i;
                    break;
                }
                _ => i += 1,
            }
        }
        seg
    }

    /// Tag `i` from the builder's index (its end is not known: set by [`sort_tags`]).
    #[inline]
    pub(super) fn indexed(
        tags_at: usize,
        (start, key_end): (u16, u16),
        escaped: u16,
        i: usize,
    ) -> Self {
        Segment {
            start: tags_at + usize::from(start),
            key_end: tags_at + usize::from(key_end),
            end: 0,
            escaped: (escaped >> i) & 1 != 0,
        }
    }

    #[inline]
    pub(super) fn cmp_key(&self, other: &Segment, buf: &[u8]) -> Ordering {
        let a = &buf[self.start + 1..self.key_end];
        let b = &buf[other.start + 1..other.key_end];
        if self.escaped || other.escaped {
            cmp_unescaped(a, b)
        } else {
            cmp_bytes(a, b)
        }
    }
}

/// Sorts the `n` tags written from `tags_at` to the end of `buf` by key, keeping only the last
/// of equal keys. `index`: where each tag starts and its key ends, relative to `tags_at`, and
/// which keys have a backslash (without it the tags are found by scanning). Allocation-free for up to [`MAX_TAGS`] tags: the sorted copy is appended to
/// the buffer and moved back.
#[cold]
pub(super) fn sort_tags(
    buf: &mut Vec<u8>,
    tags_at: usize,
    n: usize,
    index: Option<(&[(u16, u16)], u16)>,
) {
    let mut stack = [Segment::default(); MAX_TAGS];
    let mut heap = Vec::new();
    let segs: &mut [Segment] = if n <= MAX_TAGS {
        &mut stack[..n]
    } else {
        heap.resize(n, Segment::default());
        &mut heap
    };
    let mut at = tags_at;
    match index {
        Some((index, escaped)) => {
            for (i, seg) in segs.iter_mut().enumerate() {
                *seg = Segment::indexed(tags_at, index[i], escaped, i);
                seg.end = index
                    .get(i + 1)
                    .map_or(buf.len(), |next| tags_at + usize::from(next.0));
            }
            at = buf.len();
        }
        None => {
            for seg in segs.iter_mut() {
                *seg = Segment::at(buf, at);
                at = seg.end;
            }
        }
    }
    debug_assert_eq!(at, buf.len());
    // Insertion sort: a handful of tags. Stable: of equal keys, the last given stays last.
    for i in 1..segs.len() {
        let mut j = i;
        while j > 0 && segs[j - 1].cmp_key(&segs[j], buf) == Ordering::Greater {
            segs.swap(j - 1, j);
            j -= 1;
        }
    }
    let end = buf.len();
    for i in 0..segs.len() {
        let seg = segs[i];
        if let Some(next) = segs.get(i + 1) {
            if seg.cmp_key(next, buf) == Ordering::Equal {
                debug_assert!(false, "a tag key given twice");
                continue;
            }
        }
        buf.extend_from_within(seg.start..seg.end);
    }
    let sorted_len = buf.len() - end;
    buf.copy_within(end.., tags_at);
    buf.truncate(tags_at + sorted_len);
}
