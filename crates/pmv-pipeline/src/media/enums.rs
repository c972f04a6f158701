//! Numbers FFmpeg keeps in enum-typed fields (pixel formats, colour spaces and ranges,
//! codec ids and profiles), read and named without ever making a Rust enum of a value
//! the bindings do not know.
//!
//! The bindings turn FFmpeg's C enums into Rust enums, and a Rust enum holding a value
//! that is none of its variants is undefined behaviour. Such values come from files
//! (Matroska's colour matrix is copied from the file unchecked) and from a libav* newer
//! than the headers this build was made with. So fields are read as the integers they
//! are ([`raw`]), and become enums only through a checked conversion ([`pixel_format`])
//! or are named by looking them up ([`codec_name`]). Nothing else in the media layer
//! reads an enum-typed field of an FFmpeg struct by value.

use std::ffi::{CStr, c_char};

use ffmpeg_next::ffi;

/// A number that is not a value of the enum the bindings of this build know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} #{value} is unknown to this build of pmv-data")]
pub struct Unknown {
    pub what: &'static str,
    pub value: i32,
}

/// Reads the enum-typed field at `field` as the integer it holds.
///
/// # Safety
/// `field` must point to a readable, initialised field of a C enum type.
pub unsafe fn raw<T>(field: *const T) -> i32 {
    const { assert!(std::mem::size_of::<T>() == 4) };
    // SAFETY: see the function's contract; C enums here are 4-byte integers.
    unsafe { field.cast::<i32>().read() }
}

// The bindings mirror headers that number these enums consecutively from their first
// value to their `_NB` count (no explicit value in between; AVPixelFormat starts at
// AV_PIX_FMT_NONE = -1): every number in such a range is one of the enum's variants.
const PIX_FMT_FIRST: i32 = ffi::AVPixelFormat::AV_PIX_FMT_NONE as i32;
const PIX_FMT_END: i32 = ffi::AVPixelFormat::AV_PIX_FMT_NB as i32;
const SPACE_END: i32 = ffi::AVColorSpace::AVCOL_SPC_NB as i32;
const RANGE_END: i32 = ffi::AVColorRange::AVCOL_RANGE_NB as i32;
const _: () = assert!(PIX_FMT_FIRST == -1 && PIX_FMT_END > 0 && SPACE_END > 0 && RANGE_END > 0);
const _: () = assert!(std::mem::size_of::<ffi::AVPixelFormat>() == 4);
const _: () = assert!(std::mem::size_of::<ffi::AVColorSpace>() == 4);
const _: () = assert!(std::mem::size_of::<ffi::AVColorRange>() == 4);

/// The pixel format numbered `v` (an `AVFrame` or `AVCodecParameters` `format`).
pub fn pixel_format(v: i32) -> Result<ffi::AVPixelFormat, Unknown> {
    if !(PIX_FMT_FIRST..PIX_FMT_END).contains(&v) {
        return Err(Unknown {
            what: "pixel format",
            value: v,
        });
    }
    // SAFETY: `AVPixelFormat` is a 4-byte enum and every number in the range checked
    // above is one of its variants (see PIX_FMT_FIRST).
    Ok(unsafe { std::mem::transmute::<i32, ffi::AVPixelFormat>(v) })
}

fn name(p: *const c_char) -> Option<String> {
    // SAFETY: FFmpeg's names are static NUL-terminated strings, or null.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// `yuv420p`, `yuvj420p`, ...; `#N` for a number without a name.
pub fn pixel_format_name(v: i32) -> String {
    pixel_format(v)
        // SAFETY: takes any format, returns a static string or null.
        .ok()
        .and_then(|f| name(unsafe { ffi::av_get_pix_fmt_name(f) }))
        .unwrap_or_else(|| format!("#{v}"))
}

/// `bt709`, `smpte170m`, ...; `unknown` for a number without a name.
pub fn color_space_name(v: i32) -> String {
    (0..SPACE_END)
        .contains(&v)
        .then(|| {
            // SAFETY: a 4-byte enum numbered consecutively from 0 to AVCOL_SPC_NB.
            let space = unsafe { std::mem::transmute::<i32, ffi::AVColorSpace>(v) };
            // SAFETY: takes any colour space, returns a static string or null.
            name(unsafe { ffi::av_color_space_name(space) })
        })
        .flatten()
        .unwrap_or_else(|| "unknown".into())
}

/// `tv` (limited), `pc` (full); `unknown` otherwise.
pub fn color_range_name(v: i32) -> String {
    (0..RANGE_END)
        .contains(&v)
        .then(|| {
            // SAFETY: a 4-byte enum numbered consecutively from 0 to AVCOL_RANGE_NB.
            let range = unsafe { std::mem::transmute::<i32, ffi::AVColorRange>(v) };
            // SAFETY: takes any colour range, returns a static string or null.
            name(unsafe { ffi::av_color_range_name(range) })
        })
        .flatten()
        .unwrap_or_else(|| "unknown".into())
}

/// Whether `v` is the full (JPEG) colour range.
pub fn is_full_range(v: i32) -> bool {
    v == ffi::AVColorRange::AVCOL_RANGE_JPEG as i32
}

/// The codec descriptor of codec id `id`, found by comparing numbers.
fn codec_descriptor(id: i32) -> Option<&'static ffi::AVCodecDescriptor> {
    let mut d: *const ffi::AVCodecDescriptor = std::ptr::null();
    loop {
        // SAFETY: iterates libavcodec's static descriptor table.
        d = unsafe { ffi::avcodec_descriptor_next(d) };
        if d.is_null() {
            return None;
        }
        // SAFETY: a valid descriptor; its id is read as the number it is.
        if unsafe { raw(std::ptr::addr_of!((*d).id)) } == id {
            // SAFETY: descriptors are static.
            return Some(unsafe { &*d });
        }
    }
}

/// `h264`, `hevc`, ...; `#N` for a codec id without a descriptor.
pub fn codec_name(id: i32) -> String {
    codec_descriptor(id)
        .and_then(|d| name(d.name))
        .unwrap_or_else(|| format!("#{id}"))
}

/// The name of profile `profile` of codec `id` (`High`, `Main 10`, ...).
pub fn profile_name(id: i32, profile: i32) -> Option<String> {
    let mut p = codec_descriptor(id)?.profiles;
    if p.is_null() {
        return None;
    }
    loop {
        // SAFETY: a profile list terminated by FF_PROFILE_UNKNOWN.
        let entry = unsafe { &*p };
        if entry.profile == ffi::FF_PROFILE_UNKNOWN {
            return None;
        }
        if entry.profile == profile {
            return name(entry.name);
        }
        // SAFETY: the terminator was not reached.
        p = unsafe { p.add(1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_this_build_does_not_know_are_errors_or_unnamed() {
        assert_eq!(
            pixel_format(ffi::AVPixelFormat::AV_PIX_FMT_YUV420P as i32),
            Ok(ffi::AVPixelFormat::AV_PIX_FMT_YUV420P)
        );
        assert_eq!(pixel_format(-1), Ok(ffi::AVPixelFormat::AV_PIX_FMT_NONE));
        for v in [
            PIX_FMT_END,
            PIX_FMT_END + 1,
            100_000,
            i32::MAX,
            -2,
            i32::MIN,
        ] {
            let e = pixel_format(v).unwrap_err();
            assert_eq!(e.value, v);
            assert!(e.to_string().contains(&format!("pixel format #{v}")), "{e}");
            assert_eq!(pixel_format_name(v), format!("#{v}"));
        }
        assert_eq!(pixel_format_name(0), "yuv420p");
        assert_eq!(color_space_name(1), "bt709");
        assert_eq!(color_range_name(2), "pc");
        assert!(is_full_range(2) && !is_full_range(1));
        for v in [SPACE_END, 200, -1, i32::MAX] {
            assert_eq!(color_space_name(v), "unknown");
        }
        for v in [RANGE_END, 7, -3] {
            assert_eq!(color_range_name(v), "unknown");
        }
        let h264 = ffi::AVCodecID::AV_CODEC_ID_H264 as i32;
        assert_eq!(codec_name(h264), "h264");
        assert_eq!(profile_name(h264, 100).as_deref(), Some("High"));
        assert_eq!(profile_name(h264, 12345), None);
        assert_eq!(codec_name(0x7fff_fff0), "#2147483632");
        assert_eq!(profile_name(0x7fff_fff0, 1), None);
    }
}
