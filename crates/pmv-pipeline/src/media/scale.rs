//! The scaler: libswscale turning a region of a decoded picture into RGB24 of the
//! output size, with colour accuracy (full chroma interpolation, accurate rounding, the
//! picture's own YCbCr matrix and range).
//!
//! Owns the `SwsContext` and its reuse across frames and videos of the same shape. It
//! never allocates per frame: the context is rebuilt only when the source format, region
//! or colour description changes; a pixel format this build does not know is an error
//! naming it ([`super::enums::pixel_format`]), and every scale checks the picture and the
//! output buffer against the context first. All of it is `unsafe` FFI kept in this one
//! file.

use ffmpeg_next::ffi;

use super::enums::pixel_format;
use pmv_core::frame_recipe::Filter;

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
        let format = pixel_format(key.format).map_err(|e| e.to_string())?;
        // SAFETY: plain constructor; a null result means "unsupported" and is checked.
        let ctx = unsafe {
            ffi::sws_getContext(
                key.src_w as i32,
                key.src_h as i32,
                format,
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
                super::enums::pixel_format_name(key.format),
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

    /// Scales `frame` (already cropped to the region) into `dst`, `dst_stride` bytes per
    /// row, `dst_h` rows. A frame of another format or size than the key's, or a `dst`
    /// too small, is an error and nothing is written.
    ///
    /// # Safety
    /// `frame` must point to a decoded frame whose data planes hold the picture its
    /// `format`, `width` and `height` describe.
    pub unsafe fn scale(
        &self,
        frame: *const ffi::AVFrame,
        dst: &mut [u8],
        dst_stride: usize,
    ) -> Result<(), String> {
        let k = &self.key;
        // SAFETY: plain fields of the frame (see the function's contract).
        let (format, w, h) = unsafe { ((*frame).format, (*frame).width, (*frame).height) };
        if format != k.format || w != k.src_w as i32 || h != k.src_h as i32 {
            return Err(format!(
                "a {w}x{h} picture in pixel format #{format} reached a scaler set up for \
                 {}x{} in #{}",
                k.src_w, k.src_h, k.format
            ));
        }
        let need = dst_stride.checked_mul(k.dst_h as usize);
        if dst_stride < k.dst_w as usize * 3 || need.is_none_or(|n| dst.len() < n) {
            return Err(format!(
                "an output of {} bytes, {dst_stride} a row, cannot hold {}x{} RGB",
                dst.len(),
                k.dst_w,
                k.dst_h
            ));
        }
        let planes = [
            dst.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ];
        let strides = [dst_stride as i32, 0, 0, 0];
        // SAFETY: the frame matches the context (checked above; its planes per the
        // function's contract) and dst holds dst_h rows of dst_stride bytes.
        let rows = unsafe {
            ffi::sws_scale(
                self.ctx,
                (*frame).data.as_ptr() as *const *const u8,
                (*frame).linesize.as_ptr(),
                0,
                k.src_h as i32,
                planes.as_ptr(),
                strides.as_ptr(),
            )
        };
        if rows < 0 {
            return Err(format!(
                "the scaler failed: {}",
                ffmpeg_next::Error::from(rows)
            ));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_scaler_for_a_pixel_format_this_build_does_not_know() {
        let unknown = ffi::AVPixelFormat::AV_PIX_FMT_NB as i32 + 7;
        let key = ScaleKey {
            format: unknown,
            src_w: 64,
            src_h: 64,
            dst_w: 32,
            dst_h: 32,
            filter: Filter::Bicubic,
            colorspace: 1,
            full_range: false,
        };
        let e = ScalerCache::default().get(key).err().unwrap();
        assert!(
            e.contains(&format!("pixel format #{unknown} is unknown")),
            "{e}"
        );
    }

    #[test]
    fn scaling_checks_the_picture_and_the_buffer() {
        crate::media::init();
        let key = ScaleKey {
            format: ffi::AVPixelFormat::AV_PIX_FMT_YUV420P as i32,
            src_w: 16,
            src_h: 16,
            dst_w: 8,
            dst_h: 8,
            filter: Filter::Bilinear,
            colorspace: 1,
            full_range: false,
        };
        let mut cache = ScalerCache::default();
        let scaler = cache.get(key).unwrap();
        let mut frame = ffmpeg_next::frame::Video::new(ffmpeg_next::format::Pixel::YUV420P, 16, 16);
        let mut out = vec![0u8; 8 * 8 * 3];
        // SAFETY: an allocated frame of the key's format and size.
        unsafe {
            assert!(scaler.scale(frame.as_ptr(), &mut out, 24).is_ok());
            let short = scaler.scale(frame.as_ptr(), &mut out[..8 * 8 * 3 - 1], 24);
            assert!(short.unwrap_err().contains("cannot hold 8x8"));
            assert!(scaler.scale(frame.as_ptr(), &mut out, 23).is_err());
            (*frame.as_mut_ptr()).width = 32;
            let other = scaler.scale(frame.as_ptr(), &mut out, 24);
            assert!(other.unwrap_err().contains("32x16"));
        }
    }
}
