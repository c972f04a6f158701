//! The scaler: libswscale turning a region of a decoded picture into RGB24 of the
//! output size, with colour accuracy (full chroma interpolation, accurate rounding, the
//! picture's own YCbCr matrix and range).
//!
//! Owns the `SwsContext` and its reuse across frames and videos of the same shape. It
//! never allocates per frame: the context is rebuilt only when the source format, region
//! or colour description changes. All of it is `unsafe` FFI kept in this one file.

use ffmpeg_next::ffi;

use crate::shard::recipe::Filter;

/// What a scaler context is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScaleKey {
    pub format: i32,
    pub src_w: u32,
    pub src_h: u32,
    pub dst_w: u32,
    pub dst_h: u32,
    pub filter: Filter,
    /// `AVColorSpace` of the source (its YCbCr matrix).
    pub colorspace: i32,
    pub full_range: bool,
}

pub(crate) struct Scaler {
    ctx: *mut ffi::SwsContext,
    key: ScaleKey,
}

// A context is used by one thread at a time; swscale keeps no thread-bound state.
unsafe impl Send for Scaler {}

impl Drop for Scaler {
    fn drop(&mut self) {
        // SAFETY: ctx came from sws_getContext and is freed once.
        unsafe { ffi::sws_freeContext(self.ctx) }
    }
}

fn sws_flags(filter: Filter) -> i32 {
    let f = match filter {
        Filter::Bicubic => ffi::SWS_BICUBIC,
        Filter::Area => ffi::SWS_AREA,
        Filter::Bilinear => ffi::SWS_BILINEAR,
        Filter::Lanczos => ffi::SWS_LANCZOS,
    };
    f | ffi::SWS_FULL_CHR_H_INT | ffi::SWS_ACCURATE_RND
}

impl Scaler {
    fn new(key: ScaleKey) -> Result<Scaler, String> {
        // SAFETY: plain constructor; a null result means "unsupported" and is checked.
        let ctx = unsafe {
            ffi::sws_getContext(
                key.src_w as i32,
                key.src_h as i32,
                std::mem::transmute::<i32, ffi::AVPixelFormat>(key.format),
                key.dst_w as i32,
                key.dst_h as i32,
                ffi::AVPixelFormat::AV_PIX_FMT_RGB24,
                sws_flags(key.filter),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        };
        if ctx.is_null() {
            return Err(format!(
                "the scaler does not take pixel format {} at {}x{}",
                pixel_format_name(key.format),
                key.src_w,
                key.src_h
            ));
        }
        // SAFETY: ctx is valid; the coefficient tables are static in libswscale. The
        // call fails harmlessly (ignored) for RGB sources, which have no matrix.
        unsafe {
            let inv = ffi::sws_getCoefficients(key.colorspace);
            let table = ffi::sws_getCoefficients(ffi::SWS_CS_DEFAULT);
            ffi::sws_setColorspaceDetails(
                ctx,
                inv,
                key.full_range as i32,
                table,
                1,
                0,
                1 << 16,
                1 << 16,
            );
        }
        Ok(Scaler { ctx, key })
    }

    /// Scales `frame` (already cropped to the region: its width and height are the
    /// key's source size) into `dst`, `dst_stride` bytes per row, `dst_h` rows.
    ///
    /// # Safety
    /// `frame` must be a valid decoded frame of the key's format and source size, and
    /// `dst` must hold `dst_stride * dst_h` bytes.
    pub unsafe fn scale(&self, frame: *const ffi::AVFrame, dst: &mut [u8], dst_stride: usize) {
        debug_assert!(dst.len() >= dst_stride * self.key.dst_h as usize);
        let planes = [
            dst.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ];
        let strides = [dst_stride as i32, 0, 0, 0];
        // SAFETY: see the function's contract.
        unsafe {
            ffi::sws_scale(
                self.ctx,
                (*frame).data.as_ptr() as *const *const u8,
                (*frame).linesize.as_ptr(),
                0,
                self.key.src_h as i32,
                planes.as_ptr(),
                strides.as_ptr(),
            );
        }
    }
}

/// Keeps the last scaler: consecutive frames, and consecutive videos of one source
/// shape, reuse it.
#[derive(Default)]
pub(crate) struct ScalerCache {
    current: Option<Scaler>,
}

impl ScalerCache {
    pub fn get(&mut self, key: ScaleKey) -> Result<&Scaler, String> {
        if self.current.as_ref().is_none_or(|s| s.key != key) {
            self.current = None;
            self.current = Some(Scaler::new(key)?);
        }
        Ok(self.current.as_ref().expect("set above"))
    }
}

/// `yuv420p`, `yuvj420p`, ...
pub(crate) fn pixel_format_name(format: i32) -> String {
    // SAFETY: av_get_pix_fmt_name takes any value and returns a static string or null.
    unsafe {
        let p = ffi::av_get_pix_fmt_name(std::mem::transmute::<i32, ffi::AVPixelFormat>(format));
        if p.is_null() {
            format!("#{format}")
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}
