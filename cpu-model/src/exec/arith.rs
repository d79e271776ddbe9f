//! Pure integer arithmetic with exact x86 flag semantics. Every function takes operands
//! already truncated to the operand size and returns the result and the new arithmetic
//! flags (the six status flags), so the executor only merges them into RFLAGS.
//!
//! Where the SDM leaves a flag undefined, these functions keep its old value; the
//! differential tests mask undefined flags when comparing with the host.

use crate::state::rflags::{AF, ARITH, CF, OF, PF, SF, ZF};

/// All-ones mask of an operand size in bytes (1, 2, 4, 8).
#[inline(always)]
pub fn mask(size: u8) -> u64 {
    u64::MAX >> (64 - (size as u32) * 8)
}

/// The sign bit of an operand size.
#[inline(always)]
pub fn sign(size: u8) -> u64 {
    1u64 << ((size as u32) * 8 - 1)
}

/// Sign-extends a value of `size` bytes to 64 bits.
#[inline(always)]
pub fn sext(v: u64, size: u8) -> u64 {
    let sh = 64 - (size as u32) * 8;
    (((v << sh) as i64) >> sh) as u64
}

const fn parity_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let mut v = i;
        let mut ones = 0;
        while v != 0 {
            ones += v & 1;
            v >>= 1;
        }
        t[i] = if ones % 2 == 0 { PF as u8 } else { 0 };
        i += 1;
    }
    t
}

static PARITY: [u8; 256] = parity_table();

/// SF, ZF and PF of a (masked) result.
#[inline(always)]
pub fn szp(r: u64, size: u8) -> u64 {
    szp_m(r, mask(size))
}

/// [`szp`] with the operand-size mask precomputed (the sign bit is its top bit).
#[inline(always)]
pub fn szp_m(r: u64, m: u64) -> u64 {
    let mut f = PARITY[(r & 0xff) as usize] as u64;
    if r == 0 {
        f |= ZF;
    }
    if r & (m ^ (m >> 1)) != 0 {
        f |= SF;
    }
    f
}

/// Merges new arithmetic flags into RFLAGS, keeping the bits outside `which`.
#[inline(always)]
pub fn merge(rflags: u64, new: u64, which: u64) -> u64 {
    (rflags & !which) | (new & which)
}

/// ADD/ADC: `a + b + carry`.
#[inline(always)]
pub fn add(a: u64, b: u64, carry: u64, size: u8) -> (u64, u64) {
    add_m(a, b, carry, mask(size))
}

/// [`add`] with the operand-size mask precomputed.
#[inline(always)]
pub fn add_m(a: u64, b: u64, carry: u64, m: u64) -> (u64, u64) {
    let full = a.wrapping_add(b).wrapping_add(carry);
    let r = full & m;
    let cf = if m == u64::MAX {
        r < a || (carry != 0 && r == a)
    } else {
        full > m
    };
    let mut f = szp_m(r, m) | ((a ^ b ^ r) & AF);
    if cf {
        f |= CF;
    }
    if (a ^ r) & (b ^ r) & (m ^ (m >> 1)) != 0 {
        f |= OF;
    }
    (r, f)
}

/// SUB/SBB/CMP/NEG: `a - b - borrow`.
#[inline(always)]
pub fn sub(a: u64, b: u64, borrow: u64, size: u8) -> (u64, u64) {
    sub_m(a, b, borrow, mask(size))
}

/// [`sub`] with the operand-size mask precomputed.
#[inline(always)]
pub fn sub_m(a: u64, b: u64, borrow: u64, m: u64) -> (u64, u64) {
    let r = a.wrapping_sub(b).wrapping_sub(borrow) & m;
    let cf = a < b || (borrow != 0 && a == b);
    let mut f = szp_m(r, m) | ((a ^ b ^ r) & AF);
    if cf {
        f |= CF;
    }
    if (a ^ b) & (a ^ r) & (m ^ (m >> 1)) != 0 {
        f |= OF;
    }
    (r, f)
}

/// Flags of AND/OR/XOR/TEST: CF = OF = 0, AF cleared (undefined), SF/ZF/PF from the result.
#[inline(always)]
pub fn logic(r: u64, size: u8) -> u64 {
    szp(r, size)
}

/// Result of a shift or rotate: new value and new RFLAGS (complete, not only arith bits).
pub struct Shifted {
    /// New destination value.
    pub value: u64,
    /// New RFLAGS.
    pub rflags: u64,
}

#[inline(always)]
fn count_mask(size: u8) -> u64 {
    if size == 8 {
        0x3f
    } else {
        0x1f
    }
}

#[inline(always)]
fn bit(v: u64, n: u32) -> u64 {
    if n >= 64 {
        0
    } else {
        (v >> n) & 1
    }
}

/// SHL/SAL.
pub fn shl(v: u64, count: u64, size: u8, fl: u64) -> Shifted {
    let c = (count & count_mask(size)) as u32;
    if c == 0 {
        return Shifted {
            value: v,
            rflags: fl,
        };
    }
    let bits = size as u32 * 8;
    let r = if c < bits { (v << c) & mask(size) } else { 0 };
    let cf = if c <= bits { bit(v, bits - c) } else { 0 };
    let of = ((r >> (bits - 1)) & 1) ^ cf;
    let f = szp(r, size) | if cf != 0 { CF } else { 0 } | if of != 0 { OF } else { 0 };
    Shifted {
        value: r,
        rflags: merge(fl, f, ARITH),
    }
}

/// SHR.
pub fn shr(v: u64, count: u64, size: u8, fl: u64) -> Shifted {
    let c = (count & count_mask(size)) as u32;
    if c == 0 {
        return Shifted {
            value: v,
            rflags: fl,
        };
    }
    let bits = size as u32 * 8;
    let r = if c < bits { v >> c } else { 0 };
    let cf = bit(v, c - 1);
    let of = (v >> (bits - 1)) & 1;
    let f = szp(r, size) | if cf != 0 { CF } else { 0 } | if of != 0 { OF } else { 0 };
    Shifted {
        value: r,
        rflags: merge(fl, f, ARITH),
    }
}

/// SAR.
pub fn sar(v: u64, count: u64, size: u8, fl: u64) -> Shifted {
    let c = (count & count_mask(size)) as u32;
    if c == 0 {
        return Shifted {
            value: v,
            rflags: fl,
        };
    }
    let s = sext(v, size) as i64;
    let r = (s >> c.min(63)) as u64 & mask(size);
    let cf = ((s >> (c - 1).min(63)) & 1) as u64;
    let f = szp(r, size) | if cf != 0 { CF } else { 0 };
    Shifted {
        value: r,
        rflags: merge(fl, f, ARITH),
    }
}

/// ROL: only CF and OF change.
pub fn rol(v: u64, count: u64, size: u8, fl: u64) -> Shifted {
    let c = (count & count_mask(size)) as u32;
    if c == 0 {
        return Shifted {
            value: v,
            rflags: fl,
        };
    }
    let bits = size as u32 * 8;
    let t = c % bits;
    let r = if t == 0 {
        v
    } else {
        ((v << t) | (v >> (bits - t))) & mask(size)
    };
    let cf = r & 1;
    let of = ((r >> (bits - 1)) & 1) ^ cf;
    let f = if cf != 0 { CF } else { 0 } | if of != 0 { OF } else { 0 };
    Shifted {
        value: r,
        rflags: merge(fl, f, CF | OF),
    }
}

/// ROR: only CF and OF change.
pub fn ror(v: u64, count: u64, size: u8, fl: u64) -> Shifted {
    let c = (count & count_mask(size)) as u32;
    if c == 0 {
        return Shifted {
            value: v,
            rflags: fl,
        };
    }
    let bits = size as u32 * 8;
    let t = c % bits;
    let r = if t == 0 {
        v
    } else {
        ((v >> t) | (v << (bits - t))) & mask(size)
    };
    let cf = (r >> (bits - 1)) & 1;
    let of = cf ^ ((r >> (bits - 2)) & 1);
    let f = if cf != 0 { CF } else { 0 } | if of != 0 { OF } else { 0 };
    Shifted {
        value: r,
        rflags: merge(fl, f, CF | OF),
    }
}

/// Rotates `v` through CF by the masked `count` (the 8/16-bit counts taken modulo
/// width + 1, as the SDM's tempCOUNT): returns the new value and the new CF, or `None`
/// when the masked count is zero (nothing changes).
fn rotate_through_carry(v: u64, count: u64, size: u8, fl: u64, left: bool) -> Option<(u64, u64)> {
    let c = (count & count_mask(size)) as u32;
    if c == 0 {
        return None;
    }
    let bits = size as u32 * 8;
    let width = bits + 1;
    let t = match size {
        1 => c % 9,
        2 => c % 17,
        _ => c,
    };
    let x = (v as u128) | (((fl & CF) as u128) << bits);
    let wm = (1u128 << width) - 1;
    let y = match (t, left) {
        (0, _) => x,
        (_, true) => ((x << t) | (x >> (width - t))) & wm,
        (_, false) => ((x >> t) | (x << (width - t))) & wm,
    };
    Some(((y as u64) & mask(size), ((y >> bits) & 1) as u64))
}

/// The CF/OF update of RCL/RCR.
fn carry_rotate_flags(r: u64, cf: u64, of: u64, fl: u64) -> Shifted {
    let f = if cf != 0 { CF } else { 0 } | if of != 0 { OF } else { 0 };
    Shifted {
        value: r,
        rflags: merge(fl, f, CF | OF),
    }
}

/// RCL: rotate left through CF.
pub fn rcl(v: u64, count: u64, size: u8, fl: u64) -> Shifted {
    let Some((r, cf)) = rotate_through_carry(v, count, size, fl, true) else {
        return Shifted {
            value: v,
            rflags: fl,
        };
    };
    let of = ((r >> (size as u32 * 8 - 1)) & 1) ^ cf;
    carry_rotate_flags(r, cf, of, fl)
}

/// RCR: rotate right through CF (OF is computed from the operand before rotation).
pub fn rcr(v: u64, count: u64, size: u8, fl: u64) -> Shifted {
    let Some((r, cf)) = rotate_through_carry(v, count, size, fl, false) else {
        return Shifted {
            value: v,
            rflags: fl,
        };
    };
    let of = ((v >> (size as u32 * 8 - 1)) & 1) ^ (fl & CF);
    carry_rotate_flags(r, cf, of, fl)
}

/// SHLD dst, src, count.
pub fn shld(dst: u64, src: u64, count: u64, size: u8, fl: u64) -> Shifted {
    let c = (count & count_mask(size)) as u32;
    if c == 0 {
        return Shifted {
            value: dst,
            rflags: fl,
        };
    }
    let bits = size as u32 * 8;
    // Concatenate dst:src (dst high) and shift left; counts above the operand size (16-bit
    // only) are undefined by the SDM; this takes them modulo the double width.
    let wide = ((dst as u128) << bits) | src as u128;
    let c2 = c % (2 * bits);
    let sh = wide << c2;
    let r = ((sh >> bits) as u64) & mask(size);
    let cf = ((wide >> (2 * bits - c2)) & 1) as u64;
    let of = ((r ^ dst) >> (bits - 1)) & 1;
    let f = szp(r, size) | if cf != 0 { CF } else { 0 } | if of != 0 { OF } else { 0 };
    Shifted {
        value: r,
        rflags: merge(fl, f, ARITH),
    }
}

/// SHRD dst, src, count.
pub fn shrd(dst: u64, src: u64, count: u64, size: u8, fl: u64) -> Shifted {
    let c = (count & count_mask(size)) as u32;
    if c == 0 {
        return Shifted {
            value: dst,
            rflags: fl,
        };
    }
    let bits = size as u32 * 8;
    let wide = ((src as u128) << bits) | dst as u128;
    let c2 = c % (2 * bits);
    let r = ((wide >> c2) as u64) & mask(size);
    let cf = if c2 == 0 {
        0
    } else {
        ((wide >> (c2 - 1)) & 1) as u64
    };
    let of = ((r ^ dst) >> (bits - 1)) & 1;
    let f = szp(r, size) | if cf != 0 { CF } else { 0 } | if of != 0 { OF } else { 0 };
    Shifted {
        value: r,
        rflags: merge(fl, f, ARITH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_flags_8bit_overflow() {
        let (r, f) = add(0x7f, 1, 0, 1);
        assert_eq!(r, 0x80);
        assert_eq!(f & (OF | SF | CF | ZF | AF), OF | SF | AF);
        let (r, f) = add(0xff, 1, 0, 1);
        assert_eq!(r, 0);
        assert_eq!(f & (OF | SF | CF | ZF), CF | ZF);
    }

    #[test]
    fn adc_64bit_carry_with_equal_result() {
        // a + MAX + 1 == a (mod 2^64) with a carry out.
        let (r, f) = add(5, u64::MAX, 1, 8);
        assert_eq!(r, 5);
        assert_ne!(f & CF, 0);
    }

    #[test]
    fn sbb_borrow_edge() {
        let (r, f) = sub(5, 5, 1, 4);
        assert_eq!(r, 0xffff_ffff);
        assert_ne!(f & CF, 0);
    }

    #[test]
    fn rcl_through_carry_9bit_width() {
        // rcl al, 1 with CF=1 and AL=0x80: AL=0x01, CF=1.
        let s = rcl(0x80, 1, 1, CF);
        assert_eq!(s.value, 0x01);
        assert_ne!(s.rflags & CF, 0);
        // count 9 on 8-bit is a full rotation through 9 bits: unchanged.
        let s = rcl(0x5a, 9, 1, 0);
        assert_eq!(s.value, 0x5a);
    }

    #[test]
    fn parity_of_low_byte_only() {
        assert_ne!(szp(0x300, 2) & PF, 0); // low byte 0: even parity
        assert_eq!(szp(0x01, 1) & PF, 0);
    }
}
