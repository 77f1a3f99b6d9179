//! Classifying disassembled aarch64 instructions. Kept free of qemu symbols so that
//! xtask's tests can include and test it (the plugin itself links only inside qemu).

/// Whether a disassembled aarch64 instruction names a SIMD&FP vector register.
pub(crate) fn is_simd(disas: &str) -> bool {
    disas.split([' ', ',', '{', '}', '[', ']']).any(|token| {
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
