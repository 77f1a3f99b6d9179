//! Reinterpreting slices of 32-bit plain-old-data types as each other.

/// `&mut [f32]` as `&mut [i32]` (the IEEE-754 bit patterns).
pub(crate) fn f32_as_i32_mut(data: &mut [f32]) -> &mut [i32] {
    let len = data.len();
    // SAFETY: f32 and i32 have the same size and alignment and every bit pattern is a
    // valid i32 (and, on the way back, a valid f32); the new slice covers exactly the
    // memory of `data`, whose unique borrow it takes over for the same lifetime.
    unsafe { core::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<i32>(), len) }
}

/// `&[u32; 4]` as `&[i32; 4]`.
pub(crate) fn u32x4_as_i32x4(data: &[u32; 4]) -> &[i32; 4] {
    // SAFETY: u32 and i32 have the same size and alignment and every bit pattern is
    // valid for both, so the arrays have the same layout; the shared borrow carries over.
    unsafe { &*data.as_ptr().cast::<[i32; 4]>() }
}

/// `&mut [u32; 4]` as `&mut [i32; 4]`.
pub(crate) fn u32x4_as_i32x4_mut(data: &mut [u32; 4]) -> &mut [i32; 4] {
    // SAFETY: as for `u32x4_as_i32x4`; the new reference takes over the unique borrow.
    unsafe { &mut *data.as_mut_ptr().cast::<[i32; 4]>() }
}
