//! The JPEG frame codec: encodes a sample's RGB frames one JPEG each and decodes them
//! back, through libjpeg-turbo (the `turbojpeg` crate, linked statically).
//!
//! Encoding is baseline, 4:2:0 chroma subsampling (the sources are yuv420p, so little
//! is lost beyond the quantisation), at a recipe's quality. Decoding checks that a
//! frame is the size the sample says before writing a byte, and treats libjpeg-turbo's
//! warnings (a truncated or corrupt stream) as errors. This module never touches tar
//! members or sample keys; errors are plain messages that the writer and the reader
//! wrap with the shard and the key.

use std::cell::RefCell;

use turbojpeg::{Compressor, Decompressor, Image, PixelFormat, Subsamp};

/// Progressive scans a frame may have: hostile progressive JPEGs can take very long
/// to decode with an unbounded number of scans.
const MAX_SCANS: u32 = 500;

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Encodes every frame of a uint8 RGB array of `shape` `(clips, T, H, W, 3)` (C order)
/// as a JPEG of `quality` (1..=100), in clip-then-frame order.
pub fn encode_frames(
    pixels: &[u8],
    shape: [usize; 5],
    quality: u8,
) -> Result<Vec<Vec<u8>>, String> {
    let [clips, t, h, w, c] = shape;
    if c != 3 {
        return Err(format!(
            "frames must be RGB (last dimension 3), not {shape:?}"
        ));
    }
    let frame = h * w * 3;
    let len = [clips, t, h, w, c]
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d));
    if len != Some(pixels.len()) || frame == 0 {
        return Err(format!(
            "{} frame bytes do not fill the shape {shape:?}",
            pixels.len()
        ));
    }
    if !(1..=100).contains(&quality) {
        return Err(format!("JPEG quality must be 1..=100, not {quality}"));
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let enc = match slot.as_mut() {
            Some(e) => e,
            None => slot.insert(Compressor::new().map_err(|e| format!("JPEG encoder: {e}"))?),
        };
        enc.set_quality(quality as i32)
            .and_then(|()| enc.set_subsamp(Subsamp::Sub2x2))
            .map_err(|e| format!("JPEG encoder: {e}"))?;
        (0..clips * t)
            .map(|i| {
                let image = Image {
                    pixels: &pixels[i * frame..(i + 1) * frame],
                    width: w,
                    pitch: w * 3,
                    height: h,
                    format: PixelFormat::RGB,
                };
                enc.compress_to_vec(image)
                    .map_err(|e| format!("JPEG encoder: frame {i}: {e}"))
            })
            .collect()
    })
}

/// The `(height, width)` a JPEG's header declares.
pub fn jpeg_size(jpeg: &[u8]) -> Result<(usize, usize), String> {
    with_decoder(|dec| {
        let h = dec
            .read_header(jpeg)
            .map_err(|e| format!("not a JPEG: {e}"))?;
        Ok((h.height, h.width))
    })
}

/// Decodes one JPEG into `out`, which holds exactly one `height`×`width` RGB frame; a
/// JPEG of another size, a damaged one or one libjpeg-turbo warns about is an error.
pub fn decode_frame(
    jpeg: &[u8],
    height: usize,
    width: usize,
    out: &mut [u8],
) -> Result<(), String> {
    if out.len() != height * width * 3 {
        return Err(format!(
            "{} output bytes for a {height}×{width} RGB frame",
            out.len()
        ));
    }
    with_decoder(|dec| {
        let header = dec
            .read_header(jpeg)
            .map_err(|e| format!("not a JPEG: {e}"))?;
        if (header.height, header.width) != (height, width) {
            return Err(format!(
                "the JPEG is {}×{}, the sample's frames are {height}×{width}",
                header.height, header.width
            ));
        }
        let image = Image {
            pixels: out,
            width,
            pitch: width * 3,
            height,
            format: PixelFormat::RGB,
        };
        dec.decompress(jpeg, image)
            .map_err(|e| format!("the JPEG does not decode: {e}"))
    })
}

fn with_decoder<R>(f: impl FnOnce(&mut Decompressor) -> Result<R, String>) -> Result<R, String> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let dec = match slot.as_mut() {
            Some(d) => d,
            None => {
                let mut d = Decompressor::new().map_err(|e| format!("JPEG decoder: {e}"))?;
                d.set_scan_limit(MAX_SCANS)
                    .map_err(|e| format!("JPEG decoder: {e}"))?;
                slot.insert(d)
            }
        };
        f(dec)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A smooth `(clips, T, H, W, 3)` test picture that changes from frame to frame:
    /// gradients and a soft disc, the kind of content video frames have (JPEG at q90
    /// keeps it well above 35 dB).
    pub(crate) fn picture(shape: [usize; 5]) -> Vec<u8> {
        let [k, t, h, w, _] = shape;
        let mut out = Vec::with_capacity(k * t * h * w * 3);
        for i in 0..k * t {
            for y in 0..h {
                for x in 0..w {
                    let d = ((x as f64 - w as f64 / 2.0).powi(2)
                        + (y as f64 - h as f64 / 2.0).powi(2))
                    .sqrt();
                    out.push((x * 255 / w) as u8);
                    out.push((y * 200 / h + i * 8) as u8);
                    out.push((255.0 / (1.0 + (d / 20.0).powi(2))) as u8);
                }
            }
        }
        out
    }

    pub(crate) fn psnr(a: &[u8], b: &[u8]) -> f64 {
        let mse = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum::<f64>()
            / a.len() as f64;
        10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
    }

    #[test]
    fn frames_round_trip_within_psnr() {
        let shape = [2, 3, 48, 80, 3];
        let pixels = picture(shape);
        let jpegs = encode_frames(&pixels, shape, 90).unwrap();
        assert_eq!(jpegs.len(), 6);
        let frame = 48 * 80 * 3;
        let mut back = vec![0u8; pixels.len()];
        for (i, j) in jpegs.iter().enumerate() {
            assert_eq!(jpeg_size(j).unwrap(), (48, 80));
            decode_frame(j, 48, 80, &mut back[i * frame..(i + 1) * frame]).unwrap();
        }
        let p = psnr(&pixels, &back);
        assert!(p >= 35.0, "PSNR {p:.1} dB at q90");
        // Lower quality, fewer bytes.
        let small = encode_frames(&pixels, shape, 30).unwrap();
        assert!(small[0].len() < jpegs[0].len());
    }

    #[test]
    fn bad_jpegs_are_errors() {
        let shape = [1, 1, 32, 48, 3];
        let jpeg = encode_frames(&picture(shape), shape, 90).unwrap().remove(0);
        let mut out = vec![0u8; 32 * 48 * 3];
        let e = decode_frame(&jpeg, 48, 32, &mut out).unwrap_err();
        assert!(e.contains("is 32×48"), "{e}");
        // Cut inside the entropy-coded data: the header still reads, the picture not.
        let e = decode_frame(&jpeg[..jpeg.len() - 20], 32, 48, &mut out).unwrap_err();
        assert!(e.contains("does not decode"), "{e}");
        assert!(decode_frame(b"not a jpeg", 32, 48, &mut out).is_err());
        assert!(encode_frames(&[0; 10], shape, 90).is_err());
        assert!(encode_frames(&picture(shape), shape, 0).is_err());
    }
}
