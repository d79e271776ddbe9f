//! The result of a successful translation: the page it lands in and what it permits.
//!
//! One type serves the native, shadow, PV and two-dimensional walkers and the TLB, so a TLB
//! entry is exactly a cached [`Translation`]. For a 2D walk the permissions combine both
//! dimensions and the size is the smaller of the guest and EPT page sizes.

use crate::addr::{Access, AccessKind, Gva, Hpa, PageSize};
use crate::pte::pf_err;
use serde::Serialize;

/// Effective permissions of a translation, as a small bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Perms(pub u16);

impl Perms {
    /// Guest RW=1 at every level.
    pub const W: u16 = 1 << 0;
    /// Guest US=1 at every level.
    pub const U: u16 = 1 << 1;
    /// Guest NX=0 at every level (or NXE off).
    pub const X: u16 = 1 << 2;
    /// EPT read allowed (always set for native translations).
    pub const EPT_R: u16 = 1 << 3;
    /// EPT write allowed (always set for native translations).
    pub const EPT_W: u16 = 1 << 4;
    /// EPT execute allowed (always set for native translations).
    pub const EPT_X: u16 = 1 << 5;
    /// The leaf is dirty (guest D, and EPT D when EPT A/D is on): writes need no walk.
    pub const DIRTY: u16 = 1 << 6;
    /// The leaf is global (G=1 with CR4.PGE): survives non-global flushes.
    pub const GLOBAL: u16 = 1 << 7;
    /// The starting point of a walk: everything allowed, nothing yet dirty/global.
    pub const WALK_START: Perms =
        Perms(Self::W | Self::U | Self::X | Self::EPT_R | Self::EPT_W | Self::EPT_X);

    /// Whether bit(s) `b` are all set.
    #[inline]
    pub const fn has(self, b: u16) -> bool {
        self.0 & b == b
    }
    /// With bit(s) `b` set or cleared.
    #[inline]
    pub const fn with(self, b: u16, on: bool) -> Perms {
        if on {
            Perms(self.0 | b)
        } else {
            Perms(self.0 & !b)
        }
    }

    /// Check a guest-paging permission for `access` (CR0.WP in `wp`). On failure returns the
    /// #PF error code (P=1: a protection fault).
    #[inline(always)]
    pub fn check_guest(self, access: Access, wp: bool, nxe: bool) -> Result<(), u32> {
        let ok = match access.kind {
            AccessKind::Read => true,
            AccessKind::Write => self.has(Self::W) || (!access.user && !wp),
            AccessKind::Execute => self.has(Self::X),
        } && (!access.user || self.has(Self::U));
        if ok {
            Ok(())
        } else {
            Err(pf_err::P | access_err_bits(access, nxe))
        }
    }

    /// Whether the EPT dimension allows `kind`.
    #[inline]
    pub const fn ept_allows(self, kind: AccessKind) -> bool {
        match kind {
            AccessKind::Read => self.has(Self::EPT_R),
            AccessKind::Write => self.has(Self::EPT_W),
            AccessKind::Execute => self.has(Self::EPT_X),
        }
    }

    /// Whether a cached translation with these permissions can serve `access` without a
    /// walk: both dimensions allow it and a write finds the dirty bit already set.
    #[inline(always)]
    pub fn serves(self, access: Access, wp: bool) -> bool {
        let need = Self::needed_to_serve(access, wp);
        self.0 & need == need
    }

    /// The bits [`serves`](Self::serves) requires, all of them: what
    /// [`check_guest`](Self::check_guest) and [`ept_allows`](Self::ept_allows) test for
    /// `access`, plus DIRTY for a write. A supervisor write with CR0.WP=0 needs no W.
    /// A table lookup: the TLB hit path calls this on every access.
    #[inline(always)]
    pub const fn needed_to_serve(access: Access, wp: bool) -> u16 {
        const fn needed(kind: AccessKind, user: bool, wp: bool) -> u16 {
            let user_bit = if user { Perms::U } else { 0 };
            user_bit
                | match kind {
                    AccessKind::Read => Perms::EPT_R,
                    AccessKind::Write => {
                        let w = if user || wp { Perms::W } else { 0 };
                        w | Perms::EPT_W | Perms::DIRTY
                    }
                    AccessKind::Execute => Perms::X | Perms::EPT_X,
                }
        }
        const KINDS: [AccessKind; 3] = [AccessKind::Read, AccessKind::Write, AccessKind::Execute];
        // Indexed by kind * 4 + user * 2 + wp.
        const TABLE: [u16; 12] = {
            let mut t = [0; 12];
            let mut i = 0;
            while i < 12 {
                t[i] = needed(KINDS[i / 4], i & 2 != 0, i & 1 != 0);
                i += 1;
            }
            t
        };
        TABLE[(access.kind as usize) << 2 | (access.user as usize) << 1 | wp as usize]
    }
}

/// The W/U/ID bits of a #PF error code that describe the access itself.
#[inline]
pub fn access_err_bits(access: Access, nxe: bool) -> u32 {
    let mut e = 0;
    if access.is_write() {
        e |= pf_err::W;
    }
    if access.user {
        e |= pf_err::U;
    }
    if access.is_fetch() && nxe {
        e |= pf_err::ID;
    }
    e
}

/// A successful translation of a linear (or guest-physical) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Translation {
    /// Host-physical base of the page.
    pub page: Hpa,
    /// Size of the page (what a TLB entry for it covers).
    pub size: PageSize,
    /// Combined permissions and dirty/global state.
    pub perms: Perms,
}

impl Translation {
    /// The host-physical address of `gva` inside this page.
    #[inline]
    pub fn hpa(&self, gva: Gva) -> Hpa {
        self.page.add(gva.page_offset(self.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_mask_equals_the_permission_checks() {
        let kinds = [AccessKind::Read, AccessKind::Write, AccessKind::Execute];
        for bits in 0..=u16::MAX {
            let p = Perms(bits);
            for kind in kinds {
                for user in [false, true] {
                    for wp in [false, true] {
                        let a = Access { kind, user };
                        let spelled_out = p.check_guest(a, wp, true).is_ok()
                            && p.ept_allows(kind)
                            && (!a.is_write() || p.has(Perms::DIRTY));
                        assert_eq!(p.serves(a, wp), spelled_out, "{p:?} {a:?} wp={wp}");
                    }
                }
            }
        }
    }
}
