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

static TOTAL: AtomicU64 = AtomicU64::new(0);
static SIMD: AtomicU64 = AtomicU64::new(0);

/// Whether a disassembled aarch64 instruction names a SIMD&FP vector register.
fn is_simd(disas: &str) -> bool {
    disas
        .split(|c: char| c == ' ' || c == ',' || c == '{' || c == '}' || c == '[' || c == ']')
        .any(|token| {
            let mut chars = token.chars();
            match chars.next() {
                // v0.4s, v31.16b, v2.s[1]
                Some('v') => {
                    let rest: String = chars.collect();
                    let digits = rest.chars().take_while(char::is_ascii_digit).count();
                    digits > 0 && rest[digits..].starts_with('.')
                }
                // q0..q31: 128-bit loads and stores of vector registers.
                Some('q') => {
                    let rest = chars.as_str();
                    !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit())
                }
                _ => false,
            }
        })
}

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

#[cfg(test)]
mod tests {
    use super::is_simd;

    #[test]
    fn classifies_neon_and_scalar() {
        assert!(is_simd("smin v0.4s, v1.4s, v2.4s"));
        assert!(is_simd("ld1 {v0.4s}, [x0]"));
        assert!(is_simd("ldr q3, [x1, #16]"));
        assert!(is_simd("mov v1.s[0], w2"));
        assert!(!is_simd("add x0, x1, x2"));
        assert!(!is_simd("fadd s0, s1, s2"));
        assert!(!is_simd("ldr x0, [x1]"));
        assert!(!is_simd("b.eq #0x400"));
    }
}
