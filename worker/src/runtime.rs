//! What the JavaScript runtime gives that `core` must not take for itself: the clock
//! (`Date.now()`) and randomness (`crypto.getRandomValues`).

use wasm_bindgen::prelude::wasm_bindgen;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = Date, js_name = now)]
    fn date_now() -> f64;

    #[wasm_bindgen(js_namespace = crypto, js_name = getRandomValues)]
    fn get_random_values(buf: &mut [u8]);
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    date_now() as u64
}

/// Unix time in seconds.
pub fn now_secs() -> i64 {
    (date_now() / 1000.0) as i64
}

/// `N` bytes from the platform's CSPRNG.
pub fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    get_random_values(&mut buf);
    buf
}

/// A uniformly random fraction in [0, 1), for jitter.
pub fn random_fraction() -> f64 {
    let bytes = random::<4>();
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}
