//! The built-in detectors: hand-written byte scanners, one function per detector, each
//! answering "does a match start at `p`?" (see the module documentation of [`super`] for
//! what each matches and deliberately does not).
//!
//! Every scanner reads through a [`Cur`], which knows whether more text may still arrive: a
//! decision that needs a byte past the end of an unfinished text is [`More`] (pending), never
//! a guess. Each scanner looks back at most [`LOOK_BEHIND`] bytes before `p` and forward at
//! most its reach (`REACH_*`) bytes from `p`, so a decision taken on a window of a stream is
//! the decision the whole text gives.

/// The most bytes a scanner reads before a candidate start (card/phone: a digit and a
/// separator; words: one character).
pub(super) const LOOK_BEHIND: usize = 4;

pub(super) const REACH_EMAIL: usize = MAX_LOCAL + 1 + MAX_DOMAIN + 2;
pub(super) const REACH_PHONE: usize = MAX_PHONE_LEN + 2;
pub(super) const REACH_CARD: usize = 19 + 18 + 2;
pub(super) const REACH_IBAN: usize = 34 + 8 + 2;
pub(super) const REACH_SSN: usize = 11 + 2;
pub(super) const REACH_IP: usize = MAX_IPV6_RUN + 2;
pub(super) const REACH_AWS: usize = 20 + 1;
/// `-----BEGIN ` + label + `PRIVATE KEY-----` (the END line is as long or shorter).
pub(super) const REACH_PEM: usize = BEGIN.len() + MAX_PEM_LABEL + PEM_TAIL.len();
pub(super) const REACH_JWT: usize = MAX_JWT + 2;
pub(super) const REACH_API_KEY: usize = MAX_API_KEY + 1;

const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;
const MAX_PHONE_LEN: usize = 32;
const MAX_IPV6_RUN: usize = 45;
const MAX_PEM_LABEL: usize = 40;
pub(super) const MAX_JWT: usize = 1024;
pub(super) const MAX_API_KEY: usize = 256;

/// A decision needs bytes that have not arrived yet.
#[derive(Debug)]
pub(super) struct More;

/// The end of a match starting at the candidate position, or `None`.
pub(super) type Found = Result<Option<usize>, More>;

/// The text being scanned and whether it is complete.
#[derive(Clone, Copy)]
pub(super) struct Cur<'a> {
    pub t: &'a [u8],
    pub eof: bool,
}

impl Cur<'_> {
    /// Byte `i`; `Ok(None)` past the end of a complete text, `Err(More)` past the end of an
    /// unfinished one.
    #[inline]
    pub fn at(&self, i: usize) -> Result<Option<u8>, More> {
        match self.t.get(i) {
            Some(b) => Ok(Some(*b)),
            None if self.eof => Ok(None),
            None => Err(More),
        }
    }
    #[inline]
    pub fn prev(&self, p: usize, k: usize) -> Option<u8> {
        p.checked_sub(k).and_then(|i| self.t.get(i).copied())
    }
    /// Whether `lit` is at `i` (pending only when every byte present so far agrees).
    pub fn starts(&self, i: usize, lit: &[u8]) -> Result<bool, More> {
        for (k, l) in lit.iter().enumerate() {
            match self.at(i + k)? {
                Some(b) if b == *l => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
    /// Length of the run of bytes in `class` at `i`, reading at most `max + 1` bytes (a
    /// longer run reports `max + 1`). Pending when the run reaches an unfinished end.
    fn run(&self, i: usize, max: usize, class: fn(u8) -> bool) -> Result<usize, More> {
        let mut n = 0;
        while n <= max {
            match self.at(i + n)? {
                Some(b) if class(b) => n += 1,
                _ => break,
            }
        }
        Ok(n)
    }
}

#[inline]
pub(super) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
#[inline]
fn is_digit(b: Option<u8>) -> bool {
    matches!(b, Some(b'0'..=b'9'))
}
/// Whether a byte ends the previous token: absent, or not an ASCII word character.
#[inline]
fn free(b: Option<u8>) -> bool {
    !matches!(b, Some(x) if is_word(x))
}

/// A number may start at `p`: not glued to a word, to a decimal point, or to digits by a
/// single separator (`12 4111…` is one number, not `4111…`).
fn number_start(c: &Cur, p: usize) -> bool {
    match c.prev(p, 1) {
        None => true,
        Some(b) if is_word(b) => false,
        Some(b'.' | b',' | b' ' | b'-' | b'/') => !is_digit(c.prev(p, 2)),
        Some(_) => true,
    }
}

/// After a number ends at `i`: not followed by a word character, nor by `.`, `,`, `-` or
/// `/` and a digit (a longer number, a decimal, a range, a date).
fn number_end(c: &Cur, i: usize) -> Result<bool, More> {
    Ok(match c.at(i)? {
        None => true,
        Some(b) if is_word(b) => false,
        Some(b'.' | b',' | b'-' | b'/') => !is_digit(c.at(i + 1)?),
        Some(_) => true,
    })
}

/// Digit groups separated by single separators from `seps`, all the same separator:
/// `(end, digits, group lengths)`; `None` when more than `max_digits` digits (or 20 groups).
struct Groups {
    end: usize,
    digits: [u8; 20],
    n_digits: usize,
    lens: [u8; 20],
    n_groups: usize,
}

fn groups(c: &Cur, p: usize, seps: &[u8], max_digits: usize) -> Result<Option<Groups>, More> {
    let mut g = Groups { end: p, digits: [0; 20], n_digits: 0, lens: [0; 20], n_groups: 0 };
    let mut sep: Option<u8> = None;
    let mut i = p;
    loop {
        let mut len = 0u8;
        while let Some(d @ b'0'..=b'9') = c.at(i)? {
            if g.n_digits >= max_digits {
                return Ok(None);
            }
            if let Some(slot) = g.digits.get_mut(g.n_digits) {
                *slot = d - b'0';
            }
            g.n_digits += 1;
            len = len.saturating_add(1);
            i += 1;
        }
        match g.lens.get_mut(g.n_groups) {
            Some(slot) => *slot = len,
            None => return Ok(None),
        }
        g.n_groups += 1;
        g.end = i;
        match c.at(i)? {
            Some(s) if seps.contains(&s) && sep.unwrap_or(s) == s && is_digit(c.at(i + 1)?) => {
                sep = Some(s);
                i += 1;
            }
            _ => return Ok(Some(g)),
        }
    }
}

// ---- payment cards ---------------------------------------------------------------------

pub(super) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, d) in digits.iter().rev().enumerate() {
        let d = u32::from(*d);
        sum += if k % 2 == 1 {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
    }
    matches!(sum % 10, 0)
}

pub(super) fn card(c: &Cur, p: usize) -> Found {
    if !matches!(c.at(p)?, Some(b'2'..=b'6')) || !number_start(c, p) {
        return Ok(None);
    }
    let Some(g) = groups(c, p, b" -", 19)? else { return Ok(None) };
    if !(13..=19).contains(&g.n_digits) || !number_end(c, g.end)? {
        return Ok(None);
    }
    let lens = g.lens.get(..g.n_groups).unwrap_or(&[]);
    if lens.len() > 1 && lens.iter().any(|l| !(3..=6).contains(l)) {
        return Ok(None);
    }
    Ok(luhn(g.digits.get(..g.n_digits).unwrap_or(&[])).then_some(g.end))
}

// ---- US social security numbers --------------------------------------------------------

pub(super) fn ssn(c: &Cur, p: usize) -> Found {
    if !is_digit(c.at(p)?) || !number_start(c, p) {
        return Ok(None);
    }
    let Some(g) = groups(c, p, b"-", 9)? else { return Ok(None) };
    if g.n_groups != 3 || g.lens.get(..3) != Some(&[3, 2, 4][..]) || !number_end(c, g.end)? {
        return Ok(None);
    }
    let d = |a: usize, b: usize| g.digits.get(a..b).map_or(0, |s| s.iter().fold(0u32, |n, x| n * 10 + u32::from(*x)));
    let (area, group, serial) = (d(0, 3), d(3, 5), d(5, 9));
    let valid = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
    Ok(valid.then_some(g.end))
}

// ---- phone numbers ---------------------------------------------------------------------

pub(super) fn phone(c: &Cur, p: usize) -> Found {
    let first = c.at(p)?;
    let plus = first == Some(b'+');
    // Not inside a longer number: `+1 (415) …` is one match, not also `1 (415) …`.
    let start = match first {
        Some(b'+') => free(c.prev(p, 1)) && c.prev(p, 1) != Some(b'+'),
        Some(b'(' | b'0'..=b'9') => number_start(c, p) && !matches!(c.prev(p, 1), Some(b'+' | b'(')),
        _ => false,
    };
    if !start {
        return Ok(None);
    }
    let mut i = if plus { p + 1 } else { p };
    let mut lens: [u8; 8] = [0; 8];
    let mut n_groups = 0usize;
    let mut digits = 0usize;
    let mut paren = false;
    let mut dots = 0usize;
    let mut others = 0usize;
    loop {
        if i - p > MAX_PHONE_LEN {
            return Ok(None);
        }
        let mut len = 0u8;
        let after_paren;
        if c.at(i)? == Some(b'(') && !paren && n_groups <= 1 {
            paren = true;
            i += 1;
            while is_digit(c.at(i)?) && len < 5 {
                len += 1;
                i += 1;
            }
            if len == 0 || c.at(i)? != Some(b')') {
                return Ok(None);
            }
            i += 1;
            after_paren = true;
        } else {
            while is_digit(c.at(i)?) && len < 16 {
                len += 1;
                i += 1;
            }
            if len == 0 {
                return Ok(None);
            }
            after_paren = false;
        }
        digits += usize::from(len);
        if digits > 15 {
            return Ok(None);
        }
        match lens.get_mut(n_groups) {
            Some(slot) => *slot = len,
            None => return Ok(None),
        }
        n_groups += 1;
        let next = c.at(i)?;
        let group_follows = |b: Option<u8>| is_digit(b) || (b == Some(b'(') && !paren && n_groups <= 1);
        match next {
            Some(s @ (b' ' | b'-' | b'.')) if group_follows(c.at(i + 1)?) => {
                if s == b'.' {
                    dots += 1;
                } else {
                    others += 1;
                }
                i += 1;
            }
            Some(b'0'..=b'9') if after_paren => {}
            _ => break,
        }
    }
    if !number_end(c, i)? {
        return Ok(None);
    }
    let lens = lens.get(..n_groups).unwrap_or(&[]);
    if dots > 0 && (others > 0 || (!plus && lens != [3, 3, 4])) {
        return Ok(None);
    }
    let ok = if plus {
        (8..=15).contains(&digits)
    } else {
        let separated = n_groups >= 2;
        let ssn_shape = lens == [3, 2, 4];
        let iso_date = lens.len() >= 3 && lens.get(..3) == Some(&[4, 2, 2][..]);
        let thousands = lens.len() >= 3 && lens.iter().skip(1).all(|l| *l == 3) && lens.first().is_some_and(|l| *l <= 3);
        let short_group = lens.iter().skip(1).any(|l| *l < 2);
        (9..=12).contains(&digits) && separated && !ssn_shape && !iso_date && !thousands && !short_group
    };
    Ok(ok.then_some(i))
}

// ---- IBAN ------------------------------------------------------------------------------

/// IBAN lengths by country (SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&[u8; 2], u8)] = &[
    (b"AD", 24), (b"AE", 23), (b"AL", 28), (b"AT", 20), (b"AZ", 28), (b"BA", 20), (b"BE", 16),
    (b"BG", 22), (b"BH", 22), (b"BI", 27), (b"BR", 29), (b"BY", 28), (b"CH", 21), (b"CR", 22),
    (b"CY", 28), (b"CZ", 24), (b"DE", 22), (b"DJ", 27), (b"DK", 18), (b"DO", 28), (b"EE", 20),
    (b"EG", 29), (b"ES", 24), (b"FI", 18), (b"FK", 18), (b"FO", 18), (b"FR", 27), (b"GB", 22),
    (b"GE", 22), (b"GI", 23), (b"GL", 18), (b"GR", 27), (b"GT", 28), (b"HR", 21), (b"HU", 28),
    (b"IE", 22), (b"IL", 23), (b"IQ", 23), (b"IS", 26), (b"IT", 27), (b"JO", 30), (b"KW", 30),
    (b"KZ", 20), (b"LB", 28), (b"LC", 32), (b"LI", 21), (b"LT", 20), (b"LU", 20), (b"LV", 21),
    (b"LY", 25), (b"MC", 27), (b"MD", 24), (b"ME", 22), (b"MK", 19), (b"MN", 20), (b"MR", 27),
    (b"MT", 31), (b"MU", 30), (b"NI", 28), (b"NL", 18), (b"NO", 15), (b"OM", 23), (b"PK", 24),
    (b"PL", 28), (b"PS", 29), (b"PT", 25), (b"QA", 29), (b"RO", 24), (b"RS", 22), (b"RU", 33),
    (b"SA", 24), (b"SC", 31), (b"SD", 18), (b"SE", 24), (b"SI", 19), (b"SK", 24), (b"SM", 27),
    (b"SO", 23), (b"ST", 25), (b"SV", 28), (b"TL", 23), (b"TN", 24), (b"TR", 26), (b"UA", 29),
    (b"VA", 22), (b"VG", 24), (b"XK", 20),
];

/// ISO 13616 check: the first four characters moved to the end, letters as 10..35, mod 97 = 1.
pub(super) fn iban_mod97(chars: &[u8]) -> bool {
    let (head, tail) = chars.split_at(chars.len().min(4));
    let mut rem = 0u32;
    for b in tail.iter().chain(head) {
        rem = match b {
            b'0'..=b'9' => (rem * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(b - b'A') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

pub(super) fn iban(c: &Cur, p: usize) -> Found {
    let (Some(a), Some(b)) = (c.at(p)?, c.at(p + 1)?) else { return Ok(None) };
    if !a.is_ascii_uppercase() || !b.is_ascii_uppercase() || !free(c.prev(p, 1)) {
        return Ok(None);
    }
    let Some(len) = IBAN_LENGTHS.iter().find(|(cc, _)| **cc == [a, b]).map(|(_, n)| usize::from(*n)) else {
        return Ok(None);
    };
    if !is_digit(c.at(p + 2)?) || !is_digit(c.at(p + 3)?) {
        return Ok(None);
    }
    let grouped = c.at(p + 4)? == Some(b' ');
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut i = p;
    while n < len {
        if grouped && n > 0 && matches!(n % 4, 0) {
            if c.at(i)? != Some(b' ') {
                return Ok(None);
            }
            i += 1;
        }
        match c.at(i)? {
            Some(x) if x.is_ascii_uppercase() || x.is_ascii_digit() => {
                if let Some(slot) = chars.get_mut(n) {
                    *slot = x;
                }
                n += 1;
                i += 1;
            }
            _ => return Ok(None),
        }
    }
    if !free(c.at(i)?) || !iban_mod97(chars.get(..len).unwrap_or(&[])) {
        return Ok(None);
    }
    Ok(Some(i))
}

// ---- IP addresses ----------------------------------------------------------------------

pub(super) fn ipv4(c: &Cur, p: usize) -> Found {
    if !is_digit(c.at(p)?) || !free(c.prev(p, 1)) || c.prev(p, 1) == Some(b'.') {
        return Ok(None);
    }
    let mut i = p;
    for octet in 0..4 {
        if octet > 0 {
            if c.at(i)? != Some(b'.') {
                return Ok(None);
            }
            i += 1;
        }
        let start = i;
        let mut value = 0u32;
        while is_digit(c.at(i)?) && i - start < 4 {
            value = value * 10 + u32::from(c.at(i)?.unwrap_or(b'0') - b'0');
            i += 1;
        }
        let len = i - start;
        if len == 0 || len > 3 || value > 255 || (len > 1 && c.at(start)? == Some(b'0')) {
            return Ok(None);
        }
    }
    let ok = match c.at(i)? {
        None => true,
        Some(b) if is_word(b) => false,
        Some(b'.') => !is_digit(c.at(i + 1)?),
        Some(_) => true,
    };
    Ok(ok.then_some(i))
}

fn ipv6_class(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

/// RFC 4291 text form: up to eight groups of 1-4 hex digits, at most one `::`, an optional
/// dotted IPv4 tail.
pub(super) fn ipv6_valid(s: &[u8]) -> bool {
    let text = match std::str::from_utf8(s) {
        Ok(t) => t,
        Err(_) => return false,
    };
    let (head, tail, compressed) = match text.find("::") {
        Some(k) => (text.get(..k).unwrap_or(""), text.get(k + 2..).unwrap_or(""), true),
        None => (text, "", false),
    };
    if tail.contains("::") {
        return false;
    }
    let mut groups = 0usize;
    let mut parse = |part: &str, last_part: bool| -> bool {
        if part.is_empty() {
            return true;
        }
        let items: Vec<&str> = part.split(':').collect();
        let n = items.len();
        for (k, g) in items.into_iter().enumerate() {
            if k + 1 == n && last_part && g.contains('.') {
                let c = Cur { t: g.as_bytes(), eof: true };
                if !matches!(ipv4(&c, 0), Ok(Some(e)) if e == g.len()) {
                    return false;
                }
                groups += 2;
            } else if (1..=4).contains(&g.len()) && g.bytes().all(|b| b.is_ascii_hexdigit()) {
                groups += 1;
            } else {
                return false;
            }
        }
        true
    };
    let last_head = !compressed;
    if !parse(head, last_head) || !parse(tail, true) {
        return false;
    }
    if compressed {
        groups <= 7
    } else {
        groups == 8
    }
}

pub(super) fn ipv6(c: &Cur, p: usize) -> Found {
    let Some(first) = c.at(p)? else { return Ok(None) };
    if !ipv6_class(first) || first == b'.' {
        return Ok(None);
    }
    if matches!(c.prev(p, 1), Some(b) if is_word(b) || b == b':' || b == b'.') {
        return Ok(None);
    }
    let n = c.run(p, MAX_IPV6_RUN, ipv6_class)?;
    if n > MAX_IPV6_RUN || !free(c.at(p + n)?) {
        return Ok(None);
    }
    let run = c.t.get(p..p + n).unwrap_or(&[]);
    // A sentence may end right after the address.
    let mut len = run.len();
    while len > 0 && run.get(len - 1) == Some(&b'.') {
        len -= 1;
    }
    let mut s = run.get(..len).unwrap_or(&[]);
    if !ipv6_valid(s) && s.ends_with(b":") && !s.ends_with(b"::") {
        s = s.get(..s.len() - 1).unwrap_or(&[]);
    }
    let colons = s.iter().filter(|b| **b == b':').count();
    let has_digit = s.iter().any(|b| b.is_ascii_digit());
    let compressed = s.windows(2).any(|w| w == b"::");
    let groups = s.split(|b| *b == b':').filter(|g| !g.is_empty()).count();
    // `a::b` (C++ paths) and bare `::` are not addresses: a compressed form needs a digit.
    let plausible = colons >= 2 && (if compressed { has_digit } else { groups >= 3 });
    Ok((plausible && ipv6_valid(s)).then_some(p + s.len()))
}

// ---- e-mail addresses ------------------------------------------------------------------

fn local_class(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn label_class(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

pub(super) fn email(c: &Cur, p: usize) -> Found {
    let Some(first) = c.at(p)? else { return Ok(None) };
    if !local_class(first) || first == b'.' || matches!(c.prev(p, 1), Some(b) if local_class(b)) {
        return Ok(None);
    }
    let local = c.run(p, MAX_LOCAL, local_class)?;
    if local > MAX_LOCAL || c.at(p + local)? != Some(b'@') {
        return Ok(None);
    }
    let start = p + local + 1;
    let mut i = start;
    let mut labels = 0;
    let mut last;
    loop {
        let n = c.run(i, 63, label_class)?;
        let label = c.t.get(i..i + n).unwrap_or(&[]);
        if n == 0 || n > 63 || label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return Ok(None);
        }
        labels += 1;
        last = (i, n);
        i += n;
        if i - start > MAX_DOMAIN {
            return Ok(None);
        }
        if c.at(i)? == Some(b'.') && matches!(c.at(i + 1)?, Some(b) if b.is_ascii_alphanumeric()) {
            i += 1;
        } else {
            break;
        }
    }
    let tld = c.t.get(last.0..last.0 + last.1).unwrap_or(&[]);
    let ok = labels >= 2 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic) && free(c.at(i)?);
    Ok(ok.then_some(i))
}

// ---- secrets ---------------------------------------------------------------------------

pub(super) fn aws_key(c: &Cur, p: usize) -> Found {
    if !(c.starts(p, b"AKIA")? || c.starts(p, b"ASIA")?) || !free(c.prev(p, 1)) {
        return Ok(None);
    }
    for k in 4..20 {
        match c.at(p + k)? {
            Some(b) if b.is_ascii_uppercase() || b.is_ascii_digit() => {}
            _ => return Ok(None),
        }
    }
    Ok(free(c.at(p + 20)?).then_some(p + 20))
}

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const PEM_TAIL: &[u8] = b"PRIVATE KEY-----";

/// `<lead><label>PRIVATE KEY-----` at `p` with a label of `[A-Z0-9 ]`, at most 40 bytes.
fn pem_line(c: &Cur, p: usize, lead: &[u8]) -> Found {
    if !c.starts(p, lead)? {
        return Ok(None);
    }
    let mut i = p + lead.len();
    loop {
        if c.starts(i, PEM_TAIL)? {
            return Ok(Some(i + PEM_TAIL.len()));
        }
        match c.at(i)? {
            Some(b) if (b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ') && i - p - lead.len() < MAX_PEM_LABEL => {
                i += 1
            }
            _ => return Ok(None),
        }
    }
}

/// The BEGIN line of a PEM private key block at `p`.
pub(super) fn pem_begin(c: &Cur, p: usize) -> Found {
    pem_line(c, p, BEGIN)
}

/// Where the block opened by a BEGIN line ending at `from` ends: `Ok(Some(end of the first
/// END line))`, `Ok(None)` when the text has none, `Err(q)` when the first candidate END line
/// at `q` is not complete yet.
pub(super) fn pem_end(c: &Cur, from: usize) -> Result<Option<usize>, usize> {
    let mut q = from;
    while let Some(off) = c.t.get(q..).and_then(|s| s.iter().position(|b| *b == b'-')) {
        q += off;
        match pem_line(c, q, END) {
            Ok(Some(e)) => return Ok(Some(e)),
            Ok(None) => q += 1,
            Err(More) => return Err(q),
        }
    }
    Ok(None)
}

fn b64url_class(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn jwt_class(b: u8) -> bool {
    b64url_class(b) || b == b'.'
}

/// Decodes unpadded base64url (`None` on any other byte or an impossible length).
pub(super) fn b64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6).then_some(out)
}

pub(super) fn jwt(c: &Cur, p: usize) -> Found {
    if !c.starts(p, b"eyJ")? || matches!(c.prev(p, 1), Some(b) if jwt_class(b) || b == b'=') {
        return Ok(None);
    }
    let n = c.run(p, MAX_JWT, jwt_class)?;
    if n > MAX_JWT || matches!(c.at(p + n)?, Some(b'=')) {
        return Ok(None);
    }
    let mut token = c.t.get(p..p + n).unwrap_or(&[]);
    let dots = token.iter().filter(|b| **b == b'.').count();
    if dots == 3 && token.last() == Some(&b'.') {
        token = token.get(..token.len() - 1).unwrap_or(&[]);
    }
    let mut parts = token.split(|b| *b == b'.');
    let (Some(header), Some(payload), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Ok(None);
    };
    if payload.is_empty() {
        return Ok(None);
    }
    let Some(json) = b64url_decode(header) else { return Ok(None) };
    let alg = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json)
        .map(|m| matches!(m.get("alg"), Some(serde_json::Value::String(_))))
        .unwrap_or(false);
    Ok(alg.then_some(p + token.len()))
}

/// Known API key prefixes and the least number of characters after each.
const KEY_PREFIXES: &[(&[u8], usize)] = &[
    (b"sk-", 20),          // OpenAI (sk-proj-, sk-svcacct-, legacy), Anthropic (sk-ant-), DeepSeek, ...
    (b"ghp_", 30),         // GitHub personal access token (classic)
    (b"gho_", 30),
    (b"ghs_", 30),
    (b"ghu_", 30),
    (b"github_pat_", 40),  // GitHub fine-grained token
    (b"glpat-", 20),       // GitLab
    (b"xoxb-", 20),        // Slack bot / user tokens
    (b"xoxp-", 20),
    (b"AIza", 35),         // Google API key
];

pub(super) fn api_key(c: &Cur, p: usize) -> Found {
    let Some(first) = c.at(p)? else { return Ok(None) };
    if !matches!(first, b's' | b'g' | b'x' | b'A') || matches!(c.prev(p, 1), Some(b) if b64url_class(b)) {
        return Ok(None);
    }
    let mut prefix = None;
    for (pre, min) in KEY_PREFIXES {
        if c.starts(p, pre)? {
            prefix = Some((pre.len(), *min));
            break;
        }
    }
    let Some((plen, min)) = prefix else { return Ok(None) };
    let n = c.run(p, MAX_API_KEY, b64url_class)?;
    if n > MAX_API_KEY || n < plen + min {
        return Ok(None);
    }
    let tail = c.t.get(p + plen..p + n).unwrap_or(&[]);
    let ok = tail.iter().any(u8::is_ascii_digit) && tail.iter().any(u8::is_ascii_alphabetic);
    Ok(ok.then_some(p + n))
}

pub(super) fn entropy_class(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-')
}

/// Shannon entropy in bits per byte.
pub(super) fn shannon(s: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for b in s {
        if let Some(n) = counts.get_mut(usize::from(*b)) {
            *n += 1;
        }
    }
    let len = s.len() as f64;
    let mut h = 0.0;
    for n in counts.iter().filter(|n| **n > 0) {
        let p = f64::from(*n) / len;
        h -= p * p.log2();
    }
    h
}

pub(super) fn entropy(c: &Cur, p: usize, min_len: usize, max_len: usize, threshold: f64) -> Found {
    let Some(first) = c.at(p)? else { return Ok(None) };
    if !entropy_class(first) || first == b'/' || matches!(c.prev(p, 1), Some(b) if entropy_class(b)) {
        return Ok(None);
    }
    let n = c.run(p, max_len, entropy_class)?;
    if n > max_len || n < min_len {
        return Ok(None);
    }
    let token = c.t.get(p..p + n).unwrap_or(&[]);
    let mixed = token.iter().any(u8::is_ascii_digit) && token.iter().any(u8::is_ascii_alphabetic);
    Ok((mixed && shannon(token) >= threshold).then_some(p + n))
}
