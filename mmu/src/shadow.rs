//! The shadow-paging engine: shadow tables in host memory derived from the guest's tables.
//!
//! The hardware walks the shadow tables (a 1D walk, see [`crate::walk_native`]); the engine
//! keeps them consistent with the guest's tables, which it reads through the hypervisor's
//! p2m. Design choices (documented because they decide the costs):
//!
//! - **Per-root shadows.** Each shadow root (keyed by guest CR3) owns its shadow table pages;
//!   roots live in a bounded cache with LRU eviction ([`ShadowConfig::max_roots`]) and pages
//!   come from a fixed pool ([`ShadowConfig::max_pages`]); when the pool runs dry the least
//!   recently loaded other root is evicted, or the current one is reset.
//! - **Filled on demand.** Shadow entries start not-present. A #PF the hardware raises on the
//!   shadow is handed to [`ShadowEngine::handle_fault`], which walks the guest tables: if the
//!   guest allows the access, it is a *hidden* fault, fixed by filling the shadow path (and
//!   setting guest A/D); if not, it is a *true* fault to reflect to the guest.
//! - **Shadow flags mirror guest flags** level by level, so the hardware's AND across levels
//!   gives the guest's effective permissions. A shadow leaf is writable only if the guest's
//!   is, the guest D bit is already set (so the first write faults and sets it) and the
//!   target frame is not a write-protected guest page-table page. A guest leaf with A=0 is
//!   not shadowed (the first access sets A). Large guest pages are splintered into 4 KiB
//!   shadow entries.
//! - **Guest page-table writes** ([`PtWritePolicy`]): with `Emulate`, every write traps and is
//!   emulated; a level-1 entry's shadow is recomputed in place, an upper-level shadow entry is
//!   zapped (refilled lazily). With `OutOfSync`, the first write to a level-1 table is
//!   emulated, the page is unprotected and marked out of sync, and every out-of-sync page is
//!   resynchronised (all 512 entries compared) on the next CR3 load or INVLPG.
//!
//! Every guest-table and shadow-table access the engine makes is returned as a reference of
//! dimension [`Dimension::ShadowMaintenance`].

use crate::addr::{Access, Gpa, Gva, Hpa, PageSize};
use crate::config::{PtWritePolicy, ShadowConfig};
use crate::mem::PtMemory;
use crate::pte::{PageFault, PagingMode, Pte, PTE_A, PTE_D, PTE_G, PTE_NX, PTE_P, PTE_RW, PTE_US};
use crate::refs::{Dimension, RefKind, WalkRef};
use crate::translation::Perms;
use crate::walk_native::{classify, fold_perms};
use serde::Serialize;
use std::collections::HashMap;

/// The hypervisor's guest-physical to host-physical map, as the shadow engine needs it.
pub trait P2m {
    /// Host-physical address backing `gpa`, or `None` if the guest has no memory there.
    fn translate(&self, gpa: Gpa) -> Option<Hpa>;
}

/// A p2m that places guest memory `[0, size)` at host-physical `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LinearP2m {
    /// Host-physical address of guest-physical 0.
    pub offset: u64,
    /// Guest memory size in bytes.
    pub size: u64,
}

impl P2m for LinearP2m {
    fn translate(&self, gpa: Gpa) -> Option<Hpa> {
        (gpa.raw() < self.size).then(|| Hpa(gpa.raw() + self.offset))
    }
}

/// What [`ShadowEngine::handle_fault`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ShadowFault {
    /// Hidden fault: the shadow was filled; resume the guest.
    Fixed,
    /// True guest fault: inject this #PF.
    Reflect(PageFault),
    /// A write to a write-protected guest page-table page at `gpa`: emulate the instruction
    /// and pass its store to [`ShadowEngine::emulate_pt_write`].
    PtWrite {
        /// Guest-physical address written.
        gpa: Gpa,
    },
}

/// Result of a guest CR3 load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShadowRoot {
    /// Host-physical shadow PML4 to load into the real CR3.
    pub root: Hpa,
    /// True if the root came from the cache.
    pub reused: bool,
}

/// Counters of the shadow engine.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShadowStats {
    /// Faults handed to the engine.
    pub faults: u64,
    /// Hidden faults (fixed silently by a shadow fill).
    pub hidden_faults: u64,
    /// True guest faults (reflected).
    pub true_faults: u64,
    /// Faults that were writes to write-protected guest page tables.
    pub pt_write_faults: u64,
    /// Shadow fills (shadow leaf entries written on demand).
    pub fills: u64,
    /// Guest page-table writes emulated.
    pub pt_write_emulations: u64,
    /// Guest page-table pages marked out of sync.
    pub oos_marks: u64,
    /// Out-of-sync pages resynchronised.
    pub resyncs: u64,
    /// Shadow entries zapped (upper-level writes, INVLPG, unprotect).
    pub zaps: u64,
    /// Writable shadow mappings downgraded to protect a guest page-table page.
    pub write_protects: u64,
    /// Guest CR3 loads.
    pub cr3_loads: u64,
    /// CR3 loads served by a cached root.
    pub root_hits: u64,
    /// Shadow roots built.
    pub roots_built: u64,
    /// Shadow roots evicted.
    pub roots_evicted: u64,
    /// INVLPGs handled.
    pub invlpgs: u64,
    /// Shadow table pages allocated.
    pub pages_allocated: u64,
    /// Shadow table pages freed by eviction or reset.
    pub pages_evicted: u64,
    /// Guest table pages unshadowed because the guest rewrote them wholesale.
    pub unshadows: u64,
}

#[derive(Debug, Clone)]
struct Root {
    id: u32,
    guest_cr3: u64,
    shadow: u64,
    pages: Vec<u64>,
    last_use: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    root: u32,
    table: u64,
    level: u8,
}

/// The 4 KiB-aligned offset of `gva` inside the guest page a leaf at `level` maps: which
/// 4 KiB piece of a large guest page the shadow leaf for `gva` covers (0 for a 4 KiB page).
fn large_page_piece(gva: Gva, level: u8) -> u64 {
    let size = PageSize::from_leaf_level(level).unwrap_or(PageSize::Size4K);
    gva.page_offset(size) & !0xfff
}

/// The shadow-paging engine of one guest.
#[derive(Debug, Clone)]
pub struct ShadowEngine {
    cfg: ShadowConfig,
    free: Vec<u64>,
    roots: Vec<Root>,
    next_id: u32,
    clock: u64,
    current: Option<u32>,
    /// Guest table page (gfn) -> shadow tables shadowing it.
    shadowed: HashMap<u64, Vec<Link>>,
    /// Guest frame (gfn) -> shadow leaf entries mapping it.
    leaf_maps: HashMap<u64, Vec<(u32, Hpa)>>,
    oos: Vec<u64>,
    flush_needed: bool,
    /// Guest CR3s other vCPUs have loaded: their roots are never evicted (their hardware
    /// CR3 points at them).
    pinned: Vec<u64>,
    /// Counters.
    pub stats: ShadowStats,
}

fn push(refs: &mut Vec<WalkRef>, addr: Hpa, level: u8, kind: RefKind) {
    refs.push(WalkRef {
        addr,
        level,
        dim: Dimension::ShadowMaintenance,
        kind,
    });
}

impl ShadowEngine {
    /// An engine whose shadow pages are the `cfg.max_pages` frames starting at `pool_base`.
    pub fn new(cfg: ShadowConfig, pool_base: Hpa) -> Self {
        let base = pool_base.raw() & !0xfff;
        let free = (0..u64::from(cfg.max_pages))
            .rev()
            .map(|i| base + i * 0x1000)
            .collect();
        ShadowEngine {
            cfg,
            free,
            roots: Vec::new(),
            next_id: 0,
            clock: 0,
            current: None,
            shadowed: HashMap::new(),
            leaf_maps: HashMap::new(),
            oos: Vec::new(),
            flush_needed: false,
            pinned: Vec::new(),
            stats: ShadowStats::default(),
        }
    }

    /// True (once) if the engine removed write permission or entries since the last call,
    /// so the caller must flush the hardware TLB of this guest.
    pub fn take_flush_request(&mut self) -> bool {
        std::mem::take(&mut self.flush_needed)
    }

    /// Makes the cached root of `guest_cr3` current without counting a CR3 load (a
    /// guest shared by several vCPUs: the hypervisor switches to the faulting vCPU's root
    /// before handling its exit). Returns the shadow root, or `None` if it is not cached.
    pub fn activate(&mut self, guest_cr3: Gpa, mode: &PagingMode) -> Option<Hpa> {
        let g = guest_cr3.raw() & mode.addr_mask();
        let r = self.roots.iter().find(|r| r.guest_cr3 == g)?;
        self.current = Some(r.id);
        Some(Hpa(r.shadow))
    }

    /// Sets the guest CR3s other vCPUs run on; their roots are not evicted.
    pub fn set_pinned(&mut self, cr3s: &[u64], mode: &PagingMode) {
        self.pinned.clear();
        self.pinned
            .extend(cr3s.iter().map(|c| c & mode.addr_mask()));
    }

    /// Number of shadow roots cached.
    pub fn roots_cached(&self) -> usize {
        self.roots.len()
    }

    /// Shadow pages in use.
    pub fn pages_in_use(&self) -> usize {
        self.cfg.max_pages as usize - self.free.len()
    }

    fn zero_page(mem: &mut impl PtMemory, page: u64) {
        for i in 0..512 {
            mem.write_u64(Hpa(page + i * 8), 0);
        }
    }

    fn alloc(&mut self, mem: &mut impl PtMemory) -> Option<u64> {
        if self.free.is_empty() {
            let victim = self
                .roots
                .iter()
                .filter(|r| Some(r.id) != self.current && !self.pinned.contains(&r.guest_cr3))
                .min_by_key(|r| r.last_use)
                .map(|r| r.id);
            match victim {
                Some(id) => self.evict(id),
                None => {
                    if let Some(id) = self.current {
                        self.reset_root(mem, id);
                    }
                }
            }
        }
        let p = self.free.pop()?;
        Self::zero_page(mem, p);
        self.stats.pages_allocated += 1;
        Some(p)
    }

    fn forget_root_links(&mut self, id: u32) {
        self.shadowed.retain(|_, v| {
            v.retain(|l| l.root != id);
            !v.is_empty()
        });
        self.leaf_maps.retain(|_, v| {
            v.retain(|m| m.0 != id);
            !v.is_empty()
        });
    }

    fn evict(&mut self, id: u32) {
        if let Some(pos) = self.roots.iter().position(|r| r.id == id) {
            let r = self.roots.swap_remove(pos);
            self.stats.pages_evicted += r.pages.len() as u64;
            self.stats.roots_evicted += 1;
            self.free.extend(r.pages);
            self.forget_root_links(id);
            self.flush_needed = true;
        }
    }

    /// Stops shadowing guest frame `gfn` as a page table, so that it is no longer
    /// write-protected: the hypervisor calls this when the guest rewrites the page
    /// wholesale (zeroing or copying it, several trapped writes in a row), which says it
    /// is not a page table any more (KVM's write-flooding detection, Xen's early
    /// unshadow). Roots holding a shadow of it are dropped: a root no vCPU runs on is
    /// evicted, a live one is reset and refilled on demand (coarse, always safe). A frame
    /// that is a live root's own top-level table stays shadowed; returns whether the
    /// frame is now unprotected.
    pub fn unshadow(&mut self, mem: &mut impl PtMemory, gfn: u64) -> bool {
        let mut roots: Vec<u32> = self
            .shadowed
            .get(&gfn)
            .map(|v| v.iter().map(|l| l.root).collect())
            .unwrap_or_default();
        if roots.is_empty() {
            return true;
        }
        roots.sort_unstable();
        roots.dedup();
        for id in roots {
            let live = Some(id) == self.current
                || self
                    .roots
                    .iter()
                    .any(|r| r.id == id && self.pinned.contains(&r.guest_cr3));
            if live {
                self.reset_root(mem, id);
            } else {
                self.evict(id);
            }
        }
        self.oos.retain(|&g| g != gfn);
        self.stats.unshadows += 1;
        !self.shadowed.contains_key(&gfn)
    }

    /// Drop everything below the root of `id` (its own pool pressure).
    fn reset_root(&mut self, mem: &mut impl PtMemory, id: u32) {
        let Some(r) = self.roots.iter_mut().find(|r| r.id == id) else {
            return;
        };
        let keep = r.shadow;
        let gcr3 = r.guest_cr3;
        let freed: Vec<u64> = r.pages.iter().copied().filter(|&p| p != keep).collect();
        r.pages = vec![keep];
        self.stats.pages_evicted += freed.len() as u64;
        self.free.extend(freed);
        Self::zero_page(mem, keep);
        self.forget_root_links(id);
        self.shadowed.entry(gcr3 >> 12).or_default().push(Link {
            root: id,
            table: keep,
            level: 4,
        });
        self.flush_needed = true;
    }

    /// Remove write access from every shadow leaf mapping `gfn` (it became a guest table).
    fn protect(&mut self, mem: &mut impl PtMemory, gfn: u64, refs: &mut Vec<WalkRef>) {
        if self.oos.contains(&gfn) {
            return;
        }
        if let Some(maps) = self.leaf_maps.get(&gfn) {
            for &(_, ea) in maps {
                let v = mem.read_u64(ea);
                if v & PTE_RW != 0 {
                    mem.write_u64(ea, v & !PTE_RW);
                    push(refs, ea, 1, RefKind::Write);
                    self.stats.write_protects += 1;
                    self.flush_needed = true;
                }
            }
        }
    }

    fn is_protected(&self, gfn: u64) -> bool {
        self.shadowed.contains_key(&gfn) && !self.oos.contains(&gfn)
    }

    fn link(&mut self, mem: &mut impl PtMemory, gfn: u64, l: Link, refs: &mut Vec<WalkRef>) {
        let v = self.shadowed.entry(gfn).or_default();
        if !v.contains(&l) {
            v.push(l);
        }
        self.protect(mem, gfn, refs);
    }

    /// A guest MOV to CR3 with root `guest_cr3` (a gPA): resynchronise out-of-sync pages,
    /// then find the cached shadow root or build one (evicting the LRU root if full).
    pub fn cr3_load(
        &mut self,
        mem: &mut impl PtMemory,
        p2m: &impl P2m,
        mode: &PagingMode,
        guest_cr3: Gpa,
        refs: &mut Vec<WalkRef>,
    ) -> Option<ShadowRoot> {
        self.stats.cr3_loads += 1;
        self.resync_all(mem, p2m, mode, refs);
        self.clock += 1;
        let g = guest_cr3.raw() & mode.addr_mask();
        if let Some(r) = self.roots.iter_mut().find(|r| r.guest_cr3 == g) {
            r.last_use = self.clock;
            self.current = Some(r.id);
            self.stats.root_hits += 1;
            return Some(ShadowRoot {
                root: Hpa(r.shadow),
                reused: true,
            });
        }
        if self.roots.len() >= self.cfg.max_roots as usize {
            let victim = self
                .roots
                .iter()
                .filter(|r| !self.pinned.contains(&r.guest_cr3))
                .min_by_key(|r| r.last_use)
                .map(|r| r.id);
            if let Some(id) = victim {
                self.evict(id);
            }
        }
        self.current = None;
        let page = self.alloc(mem)?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.roots.push(Root {
            id,
            guest_cr3: g,
            shadow: page,
            pages: vec![page],
            last_use: self.clock,
        });
        self.current = Some(id);
        self.stats.roots_built += 1;
        self.link(
            mem,
            g >> 12,
            Link {
                root: id,
                table: page,
                level: 4,
            },
            refs,
        );
        Some(ShadowRoot {
            root: Hpa(page),
            reused: false,
        })
    }

    /// The shadow leaf value for a guest leaf `e` at guest `level`, or 0 when it must stay
    /// not-present (guest A clear, no backing memory). Shadow leaves are 4 KiB, so a large
    /// guest page is shadowed piece by piece: `piece` is the 4 KiB-aligned offset of the
    /// wanted piece inside the guest page (see [`large_page_piece`]; 0 at level 1).
    fn shadow_leaf(&self, p2m: &impl P2m, mode: &PagingMode, e: Pte, level: u8, piece: u64) -> u64 {
        if !e.present() || !e.accessed() || e.0 & mode.reserved_mask(level, level > 1) != 0 {
            return 0;
        }
        let size = PageSize::from_leaf_level(level).unwrap_or(PageSize::Size4K);
        let gpa = Gpa((e.page_addr(size) & mode.addr_mask()) + piece);
        let Some(hpa) = p2m.translate(gpa) else {
            return 0;
        };
        let writable = e.writable() && e.dirty() && !self.is_protected(gpa.frame());
        (hpa.raw() & !0xfff)
            | PTE_P
            | PTE_A
            | PTE_D
            | (e.0 & (PTE_US | PTE_G | PTE_NX))
            | if writable { PTE_RW } else { 0 }
    }

    /// Handle a #PF the hardware raised while walking the shadow of the current root.
    pub fn handle_fault(
        &mut self,
        mem: &mut impl PtMemory,
        p2m: &impl P2m,
        mode: &PagingMode,
        gva: Gva,
        access: Access,
        refs: &mut Vec<WalkRef>,
    ) -> ShadowFault {
        self.stats.faults += 1;
        let Some(root) = self
            .current
            .and_then(|id| self.roots.iter().find(|r| r.id == id))
            .map(|r| (r.id, r.guest_cr3))
        else {
            return ShadowFault::Reflect(PageFault {
                addr: gva,
                error_code: 0,
                level: 4,
            });
        };
        // Software walk of the guest tables.
        let mut path: [(Hpa, Pte); 4] = [(Hpa(0), Pte(0)); 4];
        let mut table = root.1;
        let mut level = 4u8;
        let mut perms = Perms::WALK_START;
        let leaf_level;
        loop {
            let egpa = Gpa(table + gva.table_index(level) * 8);
            let Some(ea) = p2m.translate(egpa) else {
                self.stats.true_faults += 1;
                return ShadowFault::Reflect(PageFault {
                    addr: gva,
                    error_code: 0,
                    level,
                });
            };
            let e = Pte(mem.read_u64(ea));
            push(refs, ea, level, RefKind::Read);
            path[4 - level as usize] = (ea, e);
            match classify(e, level, mode, gva, access) {
                Err(f) => {
                    self.stats.true_faults += 1;
                    return ShadowFault::Reflect(f);
                }
                Ok(leaf) => {
                    perms = fold_perms(perms, e, mode.nxe);
                    if leaf.is_some() {
                        leaf_level = level;
                        break;
                    }
                }
            }
            table = e.addr() & mode.addr_mask();
            level -= 1;
        }
        if let Err(code) = perms.check_guest(access, mode.wp, mode.nxe) {
            self.stats.true_faults += 1;
            return ShadowFault::Reflect(PageFault {
                addr: gva,
                error_code: code,
                level: leaf_level,
            });
        }
        let leaf = path[4 - leaf_level as usize].1;
        let size = PageSize::from_leaf_level(leaf_level).unwrap_or(PageSize::Size4K);
        let target_gfn =
            ((leaf.page_addr(size) & mode.addr_mask()) + (gva.page_offset(size) & !0xfff)) >> 12;
        if access.is_write() && self.is_protected(target_gfn) {
            self.stats.pt_write_faults += 1;
            return ShadowFault::PtWrite {
                gpa: Gpa((target_gfn << 12) | gva.page_offset(PageSize::Size4K)),
            };
        }
        // Hidden fault: set guest A (and D) bits, then fill the shadow path.
        for (i, slot) in path.iter_mut().enumerate().take(5 - leaf_level as usize) {
            let (ea, e) = *slot;
            let lvl = 4 - i as u8;
            let set = PTE_A
                | if lvl == leaf_level && access.is_write() {
                    PTE_D
                } else {
                    0
                };
            if e.0 & set != set {
                mem.write_u64(ea, e.0 | set);
                push(refs, ea, lvl, RefKind::Write);
                slot.1 = Pte(e.0 | set);
            }
        }
        self.stats.hidden_faults += 1;
        self.fill(mem, p2m, mode, root.0, gva, &path, leaf_level, refs);
        ShadowFault::Fixed
    }

    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        mem: &mut impl PtMemory,
        p2m: &impl P2m,
        mode: &PagingMode,
        id: u32,
        gva: Gva,
        path: &[(Hpa, Pte); 4],
        leaf_level: u8,
        refs: &mut Vec<WalkRef>,
    ) {
        let Some(mut table) = self.roots.iter().find(|r| r.id == id).map(|r| r.shadow) else {
            return;
        };
        let leaf = path[4 - leaf_level as usize].1;
        for level in (1..=4u8).rev() {
            let sea = Hpa(table + gva.table_index(level) * 8);
            let se = Pte(mem.read_u64(sea));
            push(refs, sea, level, RefKind::Read);
            if level == 1 {
                let piece = large_page_piece(gva, leaf_level);
                let v = self.shadow_leaf(p2m, mode, leaf, leaf_level, piece);
                mem.write_u64(sea, v);
                push(refs, sea, 1, RefKind::Write);
                self.stats.fills += 1;
                if v & PTE_P != 0 {
                    let gfn = ((leaf.page_addr(
                        PageSize::from_leaf_level(leaf_level).unwrap_or(PageSize::Size4K),
                    ) & mode.addr_mask())
                        + (gva.page_offset(
                            PageSize::from_leaf_level(leaf_level).unwrap_or(PageSize::Size4K),
                        ) & !0xfff))
                        >> 12;
                    let m = self.leaf_maps.entry(gfn).or_default();
                    if !m.contains(&(id, sea)) {
                        m.push((id, sea));
                    }
                }
                return;
            }
            if se.present() {
                table = se.addr();
                continue;
            }
            // The guest entry this shadow entry mirrors (the leaf's flags below a large page).
            let g = if level >= leaf_level {
                path[4 - level as usize].1
            } else {
                leaf
            };
            let Some(new) = self.alloc(mem) else { return };
            if let Some(r) = self.roots.iter_mut().find(|r| r.id == id) {
                r.pages.push(new);
            } else {
                self.free.push(new);
                return;
            }
            let flags = PTE_P | PTE_A | (g.0 & (PTE_RW | PTE_US | PTE_NX));
            mem.write_u64(sea, new | flags);
            push(refs, sea, level, RefKind::Write);
            if level > leaf_level {
                // The child mirrors a real guest table: write-protect it.
                let gfn = (g.addr() & mode.addr_mask()) >> 12;
                self.link(
                    mem,
                    gfn,
                    Link {
                        root: id,
                        table: new,
                        level: level - 1,
                    },
                    refs,
                );
            }
            table = new;
        }
    }

    /// Emulate a trapped guest store of `value` to its page-table page at `gpa`, keeping the
    /// shadows consistent according to the configured [`PtWritePolicy`].
    pub fn emulate_pt_write(
        &mut self,
        mem: &mut impl PtMemory,
        p2m: &impl P2m,
        mode: &PagingMode,
        gpa: Gpa,
        value: u64,
        refs: &mut Vec<WalkRef>,
    ) {
        let gpa = Gpa(gpa.raw() & !7);
        let Some(ea) = p2m.translate(gpa) else { return };
        mem.write_u64(ea, value);
        push(refs, ea, 0, RefKind::Write);
        self.stats.pt_write_emulations += 1;
        let gfn = gpa.frame();
        let links = self.shadowed.get(&gfn).cloned().unwrap_or_default();
        let only_l1 = !links.is_empty() && links.iter().all(|l| l.level == 1);
        if self.cfg.pt_write == PtWritePolicy::OutOfSync && only_l1 {
            if !self.oos.contains(&gfn) {
                self.oos.push(gfn);
                self.stats.oos_marks += 1;
                // Unprotect: zap the read-only shadow mappings so the next write refills writable.
                for (_, sea) in self.leaf_maps.remove(&gfn).unwrap_or_default() {
                    mem.write_u64(sea, 0);
                    push(refs, sea, 1, RefKind::Write);
                    self.stats.zaps += 1;
                }
                self.flush_needed = true;
            }
            return;
        }
        let idx = (gpa.raw() & 0xfff) / 8;
        for l in links {
            let sea = Hpa(l.table + idx * 8);
            if l.level == 1 {
                let v = self.shadow_leaf(p2m, mode, Pte(value), 1, 0);
                mem.write_u64(sea, v);
                push(refs, sea, 1, RefKind::Write);
                if v & PTE_P != 0 {
                    let m = self
                        .leaf_maps
                        .entry((v & mode.addr_mask()) >> 12)
                        .or_default();
                    if !m.contains(&(l.root, sea)) {
                        m.push((l.root, sea));
                    }
                }
            } else {
                let se = mem.read_u64(sea);
                push(refs, sea, l.level, RefKind::Read);
                if se & PTE_P != 0 {
                    mem.write_u64(sea, 0);
                    push(refs, sea, l.level, RefKind::Write);
                    self.stats.zaps += 1;
                }
            }
        }
        self.flush_needed = true;
    }

    fn resync_all(
        &mut self,
        mem: &mut impl PtMemory,
        p2m: &impl P2m,
        mode: &PagingMode,
        refs: &mut Vec<WalkRef>,
    ) {
        let pages = std::mem::take(&mut self.oos);
        for gfn in pages {
            self.stats.resyncs += 1;
            let Some(gbase) = p2m.translate(Gpa(gfn << 12)) else {
                continue;
            };
            let links = self.shadowed.get(&gfn).cloned().unwrap_or_default();
            for l in links.iter().filter(|l| l.level == 1) {
                for idx in 0..512u64 {
                    let gea = gbase.add(idx * 8);
                    let ge = Pte(mem.read_u64(gea));
                    push(refs, gea, 1, RefKind::Read);
                    let sea = Hpa(l.table + idx * 8);
                    let old = mem.read_u64(sea);
                    push(refs, sea, 1, RefKind::Read);
                    let v = self.shadow_leaf(p2m, mode, ge, 1, 0);
                    if v != old {
                        mem.write_u64(sea, v);
                        push(refs, sea, 1, RefKind::Write);
                    }
                    if v & PTE_P != 0 {
                        let m = self
                            .leaf_maps
                            .entry((v & mode.addr_mask()) >> 12)
                            .or_default();
                        if !m.contains(&(l.root, sea)) {
                            m.push((l.root, sea));
                        }
                    }
                }
            }
            self.protect(mem, gfn, refs);
            self.flush_needed = true;
        }
    }

    /// A guest INVLPG of `gva`: resynchronise out-of-sync pages, then drop the shadow leaf
    /// entry for `gva` in the current root so the next access refills it.
    pub fn invlpg(
        &mut self,
        mem: &mut impl PtMemory,
        p2m: &impl P2m,
        mode: &PagingMode,
        gva: Gva,
        refs: &mut Vec<WalkRef>,
    ) {
        self.stats.invlpgs += 1;
        self.resync_all(mem, p2m, mode, refs);
        let Some(mut table) = self
            .current
            .and_then(|id| self.roots.iter().find(|r| r.id == id))
            .map(|r| r.shadow)
        else {
            return;
        };
        for level in (1..=4u8).rev() {
            let sea = Hpa(table + gva.table_index(level) * 8);
            let se = Pte(mem.read_u64(sea));
            push(refs, sea, level, RefKind::Read);
            if !se.present() {
                return;
            }
            if level == 1 {
                mem.write_u64(sea, 0);
                push(refs, sea, 1, RefKind::Write);
                self.stats.zaps += 1;
                return;
            }
            table = se.addr();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::builder::{TableBuilder, TableFormat};
    use crate::config::PscConfig;
    use crate::mem::SparseMemory;
    use crate::pte::{pf_err, Cr3};
    use crate::refs::RefList;
    use crate::walk_native::{NativeWalker, WalkContext};

    const OFF: u64 = 0x1_0000_0000;
    const VA: u64 = 0x7f00_0000_0000;
    const DATA: u64 = 0x40_0000;
    const P2M: LinearP2m = LinearP2m {
        offset: OFF,
        size: 1 << 30,
    };

    struct Env {
        mem: SparseMemory,
        gb: TableBuilder,
        eng: ShadowEngine,
        hw: NativeWalker,
        mode: PagingMode,
        root: Hpa,
        refs: Vec<WalkRef>,
    }

    fn env(max_roots: u32, policy: PtWritePolicy) -> Env {
        let cfg = ShadowConfig {
            max_roots,
            max_pages: 64,
            pt_write: policy,
        };
        Env {
            mem: SparseMemory::new(),
            gb: TableBuilder::new(TableFormat::X86, 0x20_0000, 0x30_0000, OFF),
            eng: ShadowEngine::new(cfg, Hpa(0x800_0000)),
            hw: NativeWalker::new(&PscConfig::OFF).unwrap(),
            mode: PagingMode {
                maxphyaddr: 46,
                nxe: true,
                wp: true,
                pcide: false,
                pge: true,
            },
            root: Hpa(0),
            refs: Vec::new(),
        }
    }

    impl Env {
        /// A guest address space mapping VA -> `data` (4 KiB, RW, A/D clear).
        fn space(&mut self, data: u64) -> u64 {
            let g = self.gb.alloc_table(&mut self.mem).unwrap();
            self.gb
                .map(&mut self.mem, g, VA, data, PageSize::Size4K, PTE_RW)
                .unwrap();
            g
        }
        fn load(&mut self, g: u64) -> ShadowRoot {
            let r = self
                .eng
                .cr3_load(&mut self.mem, &P2M, &self.mode, Gpa(g), &mut self.refs)
                .unwrap();
            self.root = r.root;
            r
        }
        /// The hardware walk of the shadow.
        fn hw(&mut self, va: u64, a: Access) -> Result<Hpa, PageFault> {
            let ctx = WalkContext {
                mode: self.mode,
                cr3: Cr3::new(self.root.raw(), 0),
                vpid: 1,
            };
            let mut r = RefList::new();
            self.hw
                .walk(&mut self.mem, &ctx, Gva(va), a, Dimension::Native, &mut r)
                .map(|t| t.hpa(Gva(va)))
        }
        /// Access as the hypervisor would run it: hardware walk, fault handling, retry.
        fn access(&mut self, va: u64, a: Access) -> Result<Hpa, ShadowFault> {
            for _ in 0..3 {
                match self.hw(va, a) {
                    Ok(h) => return Ok(h),
                    Err(_) => match self.eng.handle_fault(
                        &mut self.mem,
                        &P2M,
                        &self.mode,
                        Gva(va),
                        a,
                        &mut self.refs,
                    ) {
                        ShadowFault::Fixed => continue,
                        other => return Err(other),
                    },
                }
            }
            Err(ShadowFault::Fixed)
        }
        fn pte_gpa(&mut self, g: u64, va: u64) -> Gpa {
            Gpa(self.gb.entry_addr(&mut self.mem, g, va, 1).unwrap().raw() - OFF)
        }
    }

    #[test]
    fn first_access_is_a_hidden_fault_then_translates() {
        let mut e = env(4, PtWritePolicy::Emulate);
        let g = e.space(DATA);
        e.load(g);
        assert_eq!(e.access(VA, Access::READ), Ok(Hpa(DATA + OFF)));
        let s = &e.eng.stats;
        assert_eq!((s.hidden_faults, s.true_faults, s.fills), (1, 0, 1));
        assert!(e.refs.iter().all(|r| r.dim == Dimension::ShadowMaintenance));
    }

    #[test]
    fn unreflected_guest_mapping_yields_hidden_fault_then_correct_translation() {
        let mut e = env(4, PtWritePolicy::Emulate);
        let g = e.space(DATA);
        e.load(g);
        e.access(VA, Access::READ).unwrap();
        // The guest adds a mapping for VA+4K (A clear): the trapped write is emulated but the
        // shadow stays not-present until the first access.
        let pte = e.pte_gpa(g, VA);
        e.eng.emulate_pt_write(
            &mut e.mem,
            &P2M,
            &e.mode,
            Gpa(pte.raw() + 8),
            0x70_0000 | PTE_P,
            &mut e.refs,
        );
        assert!(e.hw(VA + 0x1000, Access::READ).is_err());
        assert_eq!(
            e.access(VA + 0x1000, Access::READ),
            Ok(Hpa(0x70_0000 + OFF))
        );
        assert_eq!(e.eng.stats.hidden_faults, 2);
    }

    #[test]
    fn unshadowing_a_rewritten_table_resets_the_live_root() {
        let mut e = env(4, PtWritePolicy::Emulate);
        let g = e.space(DATA);
        e.load(g);
        e.access(VA, Access::READ).unwrap();
        let l1 = e.pte_gpa(g, VA).frame();
        assert!(e.eng.unshadow(&mut e.mem, l1));
        assert_eq!(e.eng.stats.unshadows, 1);
        assert!(e.eng.take_flush_request());
        // The live root was reset: the next access refills it (a hidden fault again).
        assert_eq!(e.access(VA, Access::READ), Ok(Hpa(DATA + OFF)));
        assert_eq!(e.eng.stats.hidden_faults, 2);
        assert_eq!(e.eng.roots_cached(), 1);
        // A live root's own top-level table stays shadowed.
        assert!(!e.eng.unshadow(&mut e.mem, g >> 12));
    }

    #[test]
    fn true_guest_fault_is_reflected() {
        let mut e = env(4, PtWritePolicy::Emulate);
        let g = e.space(DATA);
        e.load(g);
        let f = e.access(VA + 0x5000, Access::user(crate::addr::AccessKind::Read));
        assert_eq!(
            f,
            Err(ShadowFault::Reflect(PageFault {
                addr: Gva(VA + 0x5000),
                error_code: pf_err::U,
                level: 1
            }))
        );
        let f = e.access(VA, Access::user(crate::addr::AccessKind::Read));
        assert_eq!(
            f,
            Err(ShadowFault::Reflect(PageFault {
                addr: Gva(VA),
                error_code: pf_err::P | pf_err::U,
                level: 1
            }))
        );
        assert_eq!((e.eng.stats.true_faults, e.eng.stats.hidden_faults), (2, 0));
    }

    #[test]
    fn first_write_sets_guest_dirty_through_a_second_hidden_fault() {
        let mut e = env(4, PtWritePolicy::Emulate);
        let g = e.space(DATA);
        e.load(g);
        e.access(VA, Access::READ).unwrap();
        assert_eq!(e.access(VA, Access::WRITE), Ok(Hpa(DATA + OFF)));
        assert_eq!(e.eng.stats.hidden_faults, 2);
        let pte = e.pte_gpa(g, VA);
        assert_eq!(
            e.mem.read_u64(Hpa(pte.raw() + OFF)) & (PTE_A | PTE_D),
            PTE_A | PTE_D
        );
    }

    #[test]
    fn write_protect_emulation_keeps_shadow_and_guest_consistent() {
        let mut e = env(4, PtWritePolicy::Emulate);
        let g = e.space(DATA);
        e.load(g);
        e.access(VA, Access::READ).unwrap();
        // The guest maps its own level-1 table at VA+4K, writable, and rewrites VA's PTE.
        let pte = e.pte_gpa(g, VA);
        let pt_page = pte.raw() & !0xfff;
        e.eng.emulate_pt_write(
            &mut e.mem,
            &P2M,
            &e.mode,
            Gpa(pte.raw() + 8),
            pt_page | PTE_P | PTE_RW | PTE_A | PTE_D,
            &mut e.refs,
        );
        let pte_va = VA + 0x1000 + (pte.raw() & 0xfff);
        let trap = e.access(pte_va, Access::WRITE);
        assert_eq!(trap, Err(ShadowFault::PtWrite { gpa: pte }));
        let new = 0x50_0000 | PTE_P | PTE_RW | PTE_A | PTE_D;
        e.eng
            .emulate_pt_write(&mut e.mem, &P2M, &e.mode, pte, new, &mut e.refs);
        assert_eq!(e.mem.read_u64(Hpa(pte.raw() + OFF)), new);
        // The shadow was updated in place: no fault, new frame.
        assert_eq!(e.hw(VA, Access::WRITE), Ok(Hpa(0x50_0000 + OFF)));
        let s = &e.eng.stats;
        assert_eq!((s.pt_write_faults, s.pt_write_emulations), (1, 2));
        // Reads of the page-table page through its mapping work (read-only shadow).
        assert_eq!(e.access(pte_va, Access::READ), Ok(Hpa(pte.raw() + OFF)));
    }

    #[test]
    fn cr3_switch_between_two_spaces_reuses_cached_roots() {
        let mut e = env(4, PtWritePolicy::Emulate);
        let g1 = e.space(DATA);
        let g2 = e.space(0x60_0000);
        let r1 = e.load(g1);
        e.access(VA, Access::READ).unwrap();
        e.load(g2);
        assert_eq!(e.access(VA, Access::READ), Ok(Hpa(0x60_0000 + OFF)));
        let again = e.load(g1);
        assert_eq!(
            again,
            ShadowRoot {
                root: r1.root,
                reused: true
            }
        );
        assert_eq!(e.hw(VA, Access::READ), Ok(Hpa(DATA + OFF)));
        let s = &e.eng.stats;
        assert_eq!((s.roots_built, s.root_hits, s.hidden_faults), (2, 1, 2));
    }

    #[test]
    fn small_root_cache_evicts_least_recently_loaded() {
        let mut e = env(2, PtWritePolicy::Emulate);
        let gs: Vec<u64> = (0..3).map(|i| e.space(DATA + i * 0x1000)).collect();
        for &g in &gs {
            e.load(g);
            e.access(VA, Access::READ).unwrap();
        }
        assert_eq!((e.eng.stats.roots_evicted, e.eng.roots_cached()), (1, 2));
        // Root + 3 tables (PDPT, PD, PT) were freed with the first space.
        assert_eq!(e.eng.stats.pages_evicted, 4);
        assert!(!e.load(gs[0]).reused);
        assert!(e.load(gs[2]).reused);
        assert_eq!(e.eng.stats.roots_built, 4);
    }

    #[test]
    fn invlpg_drops_the_shadow_entry() {
        let mut e = env(4, PtWritePolicy::Emulate);
        let g = e.space(DATA);
        e.load(g);
        e.access(VA, Access::READ).unwrap();
        e.eng
            .invlpg(&mut e.mem, &P2M, &e.mode, Gva(VA), &mut e.refs);
        assert!(e.hw(VA, Access::READ).is_err());
        assert_eq!(e.eng.stats.zaps, 1);
    }

    #[test]
    fn out_of_sync_page_is_resynced_on_cr3_load() {
        let mut e = env(4, PtWritePolicy::OutOfSync);
        let g = e.space(DATA);
        e.load(g);
        e.access(VA, Access::READ).unwrap();
        let pte = e.pte_gpa(g, VA);
        let pt_page = pte.raw() & !0xfff;
        // Map the L1 table at VA+4K: a write to the L1 page, marking it out of sync.
        e.eng.emulate_pt_write(
            &mut e.mem,
            &P2M,
            &e.mode,
            Gpa(pte.raw() + 8),
            pt_page | PTE_P | PTE_RW | PTE_A | PTE_D,
            &mut e.refs,
        );
        assert_eq!(e.eng.stats.oos_marks, 1);
        // The page is unprotected: the guest now writes its PTE directly, no trap.
        let pte_va = VA + 0x1000 + (pte.raw() & 0xfff);
        let h = e.access(pte_va, Access::WRITE).unwrap();
        let new = 0x50_0000 | PTE_P | PTE_RW | PTE_A | PTE_D;
        e.mem.write_u64(h, new);
        assert_eq!(e.eng.stats.pt_write_faults, 0);
        // Stale until the resync.
        assert_eq!(e.hw(VA, Access::READ), Ok(Hpa(DATA + OFF)));
        e.load(g);
        assert_eq!(e.eng.stats.resyncs, 1);
        assert_eq!(e.hw(VA, Access::READ), Ok(Hpa(0x50_0000 + OFF)));
        // Protected again after the resync: the next write to the table traps.
        assert_eq!(
            e.access(pte_va, Access::WRITE),
            Err(ShadowFault::PtWrite { gpa: pte })
        );
    }
}
