//! The broker's global allocator: the system allocator, except that very
//! large blocks are reserved address space (`MAP_NORESERVE`) that costs
//! memory only as it is touched.
//!
//! Why: the Kafka codec sizes each array with `Vec::with_capacity(n)` for the
//! `n` a request claims, before decoding one element. A nine-byte request
//! claiming two billion elements would ask for tens of GiB; the kernel
//! refuses such an obvious overcommit, and a refused allocation aborts the
//! process. Reserved address space is not refused, the decode then fails on
//! the short buffer, and the block is returned untouched. (Upstream:
//! kafka-protocol-rs pull requests #152, #161 and #200; drop this once one
//! lands.)

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large are mapped with `MAP_NORESERVE`.
const LARGE: usize = 1 << 30;
const PAGE: usize = 4096;

#[derive(Debug)]
pub struct LargeAllocReserves;

fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= PAGE
}

// SAFETY: small blocks go to `System` unchanged. Large blocks are fresh
// anonymous private mappings, page-aligned (so any alignment up to a page is
// met) and zero-filled by the kernel; each is unmapped exactly once, in
// `dealloc`, with the size it was mapped with (the same layout, as
// `GlobalAlloc` guarantees).
unsafe impl GlobalAlloc for LargeAllocReserves {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_large(layout) {
            // SAFETY: the caller's guarantees for `layout` pass on unchanged.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: a new anonymous mapping touches no existing memory.
        let block = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if block == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            block.cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !is_large(layout) {
            // SAFETY: as in `alloc`.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: as in `alloc`; a fresh anonymous mapping is already zeroed.
        unsafe { self.alloc(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if !is_large(layout) {
            // SAFETY: `block` came from `System` with this layout.
            return unsafe { System.dealloc(block, layout) };
        }
        // SAFETY: `block` is a mapping of `layout.size()` bytes made in `alloc`.
        unsafe {
            libc::munmap(block.cast(), layout.size());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_block_is_reserved_not_committed_and_small_ones_use_the_system() {
        let allocator = LargeAllocReserves;
        // 64 GiB: more than this machine has, so only a reservation can succeed.
        let huge = Layout::from_size_align(64 << 30, 8).unwrap();
        // SAFETY: the layout is non-zero; the block is written within bounds and freed with its layout.
        unsafe {
            let block = allocator.alloc(huge);
            assert!(!block.is_null(), "a reservation of 64 GiB succeeds");
            block.write(7);
            block.add((64 << 30) - 1).write(9);
            assert_eq!(block.read(), 7);
            allocator.dealloc(block, huge);
            let small = Layout::from_size_align(64, 8).unwrap();
            let block = allocator.alloc_zeroed(small);
            assert_eq!(block.read(), 0);
            allocator.dealloc(block, small);
        }
    }
}
