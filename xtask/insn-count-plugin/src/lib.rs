//! Counts the guest instructions a program executes under qemu-user: all of them, and
//! those that touch SIMD registers (NEON `vN.<T>` operands or `qN` registers).
//!
//! Counting happens per translation block: when qemu translates a block, its
//! instructions are classified once; each execution of the block adds the block's two
//! counts. At exit one line is printed to stderr:
//! `insn-count: total <N> simd <M>`.

use qemu_plugin::install::{Args, Info};
use qemu_plugin::{HasCallbacks, PluginId, Register, TranslationBlock, register};
use std::sync::atomic::{AtomicU64, Ordering};

mod classify;
use classify::is_simd;

static TOTAL: AtomicU64 = AtomicU64::new(0);
static SIMD: AtomicU64 = AtomicU64::new(0);

struct InsnCount;

impl Register for InsnCount {
    fn register(&mut self, id: PluginId, _args: &Args, _info: &Info) -> qemu_plugin::Result<()> {
        qemu_plugin::qemu_plugin_register_atexit_cb(id, |_| {
            eprintln!(
                "insn-count: total {} simd {}",
                TOTAL.load(Ordering::Relaxed),
                SIMD.load(Ordering::Relaxed)
            );
        })
    }
}

impl HasCallbacks for InsnCount {
    fn on_translation_block_translate(
        &mut self,
        _id: PluginId,
        tb: TranslationBlock,
    ) -> qemu_plugin::Result<()> {
        let mut total = 0u64;
        let mut simd = 0u64;
        for insn in tb.instructions() {
            total += 1;
            if is_simd(&insn.disas()?) {
                simd += 1;
            }
        }
        tb.register_execute_callback(move |_| {
            TOTAL.fetch_add(total, Ordering::Relaxed);
            SIMD.fetch_add(simd, Ordering::Relaxed);
        });
        Ok(())
    }
}

register!(InsnCount);
