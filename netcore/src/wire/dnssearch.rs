//! The DHCP domain search option (119, RFC 3397), encoded as slirp's `dnssearch.c` does.
//!
//! # Theory of operation
//!
//! Each name becomes DNS labels; a name whose trailing labels repeat those of another is cut
//! short with a compression pointer to them. Which name points where follows slirp's algorithm
//! step by step, so that a guest gets the same bytes from us as from QEMU:
//!
//! 1. names are ordered by encoded length (slirp's suffix comparator always reduces to that,
//!    because the bytes it compares lie in the common suffix; `qsort` keeps equal lengths in
//!    input order for lists this short);
//! 2. each name is given the number of trailing whole-label bytes it shares with the next
//!    in that order (only if more than a 2-byte pointer);
//! 3. neighbours sharing more than a given depth form a group, recursively; in each group
//!    every name without a reference yet points at the member given first in the input;
//! 4. names are written in input order, the shared tail of each replaced by a pointer;
//! 5. the result is cut into 255-byte chunks, each behind its own `119, len` header.
//!
//! One deliberate difference: slirp computes a pointer into a name that was itself already
//! compressed from that name's *shortened* length, which points a few bytes too early
//! (for `foo.com a.example.com b.example.com` it encodes the last name as just `b`). Here the
//! pointer uses the name's full length, which is what slirp meant; every list slirp encodes
//! correctly comes out byte for byte the same.
//!
//! Names slirp cannot encode (empty, an empty label, a label of 64 bytes or more) are left out.

/// DHCP option code of the domain search list.
pub const OPTION_CODE: u8 = 119;
const MAX_CHUNK: usize = 255;
/// A compression pointer: two bytes.
const REFERENCE_LEN: usize = 2;
/// Offsets a pointer can express (slirp's bound: strictly below 0x3fff).
const MAX_POINTER: usize = 0x3fff;

/// Encodes `names` as complete option-119 chunks (code, length, data, repeated), or `None` when
/// no name can be encoded.
pub fn encode_option(names: &[String]) -> Option<Vec<u8>> {
    let data = encode_names(names)?;
    let mut out = Vec::with_capacity(data.len() + 2 * data.len().div_ceil(MAX_CHUNK));
    for chunk in data.chunks(MAX_CHUNK) {
        out.push(OPTION_CODE);
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    Some(out)
}

/// One name while it is being compressed.
#[derive(Debug)]
struct Domain {
    /// Position in the input list (slirp: position of its labels in the scratch buffer).
    input: usize,
    labels: Vec<u8>,
    /// Trailing bytes shared with the next name by length, then with its reference target.
    common: usize,
    /// Index (in length order) of the name this one points into.
    refdom: Option<usize>,
}

/// The compressed names, concatenated, without option headers.
fn encode_names(names: &[String]) -> Option<Vec<u8>> {
    let mut doms: Vec<Domain> = names
        .iter()
        .filter_map(|n| to_labels(n))
        .enumerate()
        .map(|(input, labels)| Domain {
            input,
            labels,
            common: 0,
            refdom: None,
        })
        .collect();
    if doms.is_empty() {
        return None;
    }
    doms.sort_by_key(|d| d.labels.len());
    let n = doms.len();
    // slirp's order fix-up leaves 1 in the last entry; only the others are recomputed.
    doms[n - 1].common = 1;
    for i in 1..n {
        doms[i - 1].common = common_label(&doms[i - 1].labels, &doms[i].labels);
    }
    make_refs(&mut doms, 0, n - 1, 0);

    // Write in input order. `at[k]`: where the name of sorted index k was written.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&k| doms[k].input);
    let mut at = vec![0usize; n];
    let mut out = Vec::new();
    for &k in &order {
        let d = &doms[k];
        at[k] = out.len();
        let mut bytes = d.labels.clone();
        if let Some(r) = d.refdom {
            // The target precedes `d` in input order, so it has been written already.
            let target = &doms[r];
            let shared = target.labels.len().checked_sub(d.common);
            let keep = bytes.len().checked_sub(d.common);
            if let (Some(shared), Some(keep)) = (shared, keep)
                && at[r] + shared < MAX_POINTER
            {
                let moff = at[r] + shared;
                bytes.truncate(keep);
                bytes.push(0xc0 | (moff >> 8) as u8);
                bytes.push((moff & 0xff) as u8);
            }
        }
        out.extend_from_slice(&bytes);
    }
    Some(out)
}

/// DNS labels of `name` with the terminating zero, or `None` where slirp's
/// `domain_mklabels` fails (empty name, empty label, label of 64 bytes or more).
/// One trailing dot is allowed.
fn to_labels(name: &str) -> Option<Vec<u8>> {
    if name.is_empty() {
        return None;
    }
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(trimmed.len() + 2);
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() >= 64 {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Some(out)
}

/// Trailing bytes that `a` and `b` have in common, counted from the first whole label of `a`
/// inside the common byte suffix; 0 unless more than a pointer would save (slirp's
/// `domain_common_label`).
fn common_label(a: &[u8], b: &[u8]) -> usize {
    let same = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let first_equal = a.len() - same;
    let mut pos = 0;
    while let Some(&len) = a.get(pos) {
        if len == 0 || pos >= first_equal {
            break;
        }
        pos += usize::from(len) + 1;
    }
    let res = a.len().saturating_sub(pos);
    if res > REFERENCE_LEN { res } else { 0 }
}

/// slirp's `domain_mkxrefs` over the names `first..=last` (length order) that share more than
/// `depth` trailing bytes: deeper groups first, then every member without a reference points
/// at the member given first in the input.
fn make_refs(doms: &mut [Domain], first: usize, last: usize, depth: usize) {
    let Some(target) = (first..=last).min_by_key(|&k| doms[k].input) else {
        return;
    };
    let mut i = first;
    while i != last {
        if doms[i].common == depth {
            i += 1;
            continue;
        }
        let mut next_depth = usize::MAX;
        let mut group_last = i;
        while group_last != last {
            let co = doms[group_last].common;
            if co <= depth {
                break;
            }
            next_depth = next_depth.min(co);
            group_last += 1;
        }
        make_refs(doms, i, group_last, next_depth);
        i = group_last;
        if i == last {
            break;
        }
        i += 1;
    }
    if depth == 0 {
        return;
    }
    for (k, d) in doms.iter_mut().enumerate().take(last + 1).skip(first) {
        if k != target && d.refdom.is_none() {
            d.refdom = Some(target);
            d.common = depth;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(names: &[&str]) -> Option<Vec<u8>> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        encode_option(&names)
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Decodes option data (headers stripped) back into names, following pointers.
    fn decode(data: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let mut labels = Vec::new();
            let mut p = pos;
            let mut end = None;
            let mut hops = 0;
            loop {
                let len = data[p];
                if len == 0 {
                    end.get_or_insert(p + 1);
                    break;
                }
                if len & 0xc0 == 0xc0 {
                    end.get_or_insert(p + 2);
                    p = (usize::from(len & 0x3f) << 8) | usize::from(data[p + 1]);
                    hops += 1;
                    assert!(hops < 20);
                    continue;
                }
                let l = usize::from(len);
                labels.push(String::from_utf8(data[p + 1..p + 1 + l].to_vec()).unwrap());
                p += 1 + l;
            }
            names.push(labels.join("."));
            pos = end.unwrap();
        }
        names
    }

    fn strip_headers(opt: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        let mut p = 0;
        while p < opt.len() {
            assert_eq!(opt[p], OPTION_CODE);
            let len = usize::from(opt[p + 1]);
            data.extend_from_slice(&opt[p + 2..p + 2 + len]);
            p += 2 + len;
        }
        data
    }

    // Expected bytes below come from libslirp's dnssearch.c compiled as is.
    #[test]
    fn matches_slirp_for_a_suffix_pair() {
        assert_eq!(
            enc(&["example.com", "corp.example.com"]).unwrap(),
            hex("7714076578616d706c6503636f6d0004636f7270c000")
        );
        assert_eq!(
            enc(&["corp.example.com", "example.com"]).unwrap(),
            hex("771404636f7270076578616d706c6503636f6d00c005")
        );
    }

    #[test]
    fn matches_slirp_for_nested_groups() {
        assert_eq!(
            enc(&["a.example.com", "b.example.com", "foo.com"]).unwrap(),
            hex("77190161076578616d706c6503636f6d000162c00203666f6fc00a")
        );
    }

    #[test]
    fn fixes_slirp_pointer_into_compressed_name() {
        // slirp: ...0162c008 ("b"); the pointer belongs 3 bytes later, at "example.com".
        let opt = enc(&["foo.com", "a.example.com", "b.example.com"]).unwrap();
        assert_eq!(
            opt,
            hex("771903666f6f03636f6d000161076578616d706c65c0040162c00b")
        );
        assert_eq!(
            decode(&strip_headers(&opt)),
            ["foo.com", "a.example.com", "b.example.com"]
        );
    }

    #[test]
    fn skips_names_slirp_cannot_encode() {
        assert_eq!(enc(&[]), None);
        assert_eq!(enc(&["", ".", "a..b"]), None);
        let long = "x".repeat(64);
        assert_eq!(enc(&[long.as_str()]), None);
        assert_eq!(enc(&["example.com."]), enc(&["example.com"]));
    }

    #[test]
    fn long_lists_split_into_255_byte_chunks() {
        let names: Vec<String> = (0..40)
            .map(|i| format!("host{i:02}.unrelated{i:02}.test{i:02}"))
            .collect();
        let opt = encode_option(&names).unwrap();
        let data = strip_headers(&opt);
        assert!(data.len() > 255);
        assert_eq!(opt[0], OPTION_CODE);
        assert_eq!(opt[1], 255);
        assert_eq!(opt[2 + 255], OPTION_CODE);
        assert_eq!(decode(&data), names);
    }

    #[test]
    fn round_trips_mixed_lists() {
        let lists: &[&[&str]] = &[
            &["a.b.c", "b.c", "c", "x.b.c", "y.a.b.c"],
            &["example.com", "example.com"],
            &[
                "corp.example.com",
                "lab.corp.example.com",
                "example.org",
                "example.com",
            ],
            &["q.w.e.r.t.y", "w.e.r.t.y", "e.r.t.y", "z.e.r.t.y"],
        ];
        for list in lists {
            let opt = enc(list).unwrap();
            assert_eq!(&decode(&strip_headers(&opt)), list, "{list:?}");
        }
    }
}
