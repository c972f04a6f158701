//! Cover images as JPEG: a shard's `<key>.jpg` member must be a JPEG, while covers come
//! as JPEG, PNG, WebP or BMP.
//!
//! A JPEG is passed through byte for byte; any other image FFmpeg reads is decoded and
//! encoded once as a high-quality baseline JPEG (4:2:0, full range, quantiser 2). The
//! image is opened through [`super::open`] as a still image recognised from its bytes:
//! its file name is never a pattern (a cover named `a%20d.png` is that file, not a
//! numbered sequence), and pictures over 8K are refused. Nothing is written to disk here.

use std::path::Path;

use ffmpeg_next::{self as ff, ffi};

use super::MediaError;

/// Covers larger than this are not images a dataset ships.
const MAX_COVER_BYTES: u64 = 64 << 20;

/// Whether `bytes` start like a JPEG file.
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// The cover at `path` as JPEG bytes.
pub fn cover_jpeg(path: &Path) -> Result<Vec<u8>, MediaError> {
    let io = |source| MediaError::Io {
        path: path.to_owned(),
        source,
    };
    let size = fs_err::metadata(path).map_err(io)?.len();
    let corrupt = |reason: String| MediaError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    if size > MAX_COVER_BYTES {
        return Err(corrupt(format!(
            "{size} bytes is too large for a cover image"
        )));
    }
    let bytes = fs_err::read(path).map_err(io)?;
    if is_jpeg(&bytes) {
        return Ok(bytes);
    }
    let mut input = super::open::open(path, super::open::Kind::Image)?;
    let stream = input
        .streams()
        .best(ff::media::Type::Video)
        .ok_or_else(|| corrupt("no picture in the image file".into()))?;
    let index = stream.index();
    let mut decoder = ff::codec::context::Context::from_parameters(stream.parameters())
        .and_then(|mut c| {
            // SAFETY: a valid context, not opened yet.
            unsafe { super::open::bound_decoder(c.as_mut_ptr()) };
            c.decoder().video()
        })
        .map_err(|e| corrupt(format!("cannot decode the image: {e}")))?;
    let mut frame = ff::frame::Video::empty();
    let mut got = false;
    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        decoder
            .send_packet(&packet)
            .map_err(|e| corrupt(format!("cannot decode the image: {e}")))?;
        if decoder.receive_frame(&mut frame).is_ok() {
            got = true;
            break;
        }
    }
    if !got {
        decoder
            .send_eof()
            .map_err(|e| corrupt(format!("cannot decode the image: {e}")))?;
        decoder
            .receive_frame(&mut frame)
            .map_err(|e| corrupt(format!("the image has no decodable picture: {e}")))?;
    }
    // SAFETY: a plain field of the decoded frame.
    let format = unsafe { (*frame.as_ptr()).format };
    super::enums::pixel_format(format).map_err(|e| MediaError::Unsupported {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    encode_jpeg(&frame).map_err(|e| corrupt(format!("cannot encode the image as JPEG: {e}")))
}

fn encode_jpeg(frame: &ff::frame::Video) -> Result<Vec<u8>, ff::Error> {
    let (w, h) = (frame.width(), frame.height());
    let mut yuv = ff::frame::Video::new(ff::format::Pixel::YUVJ420P, w, h);
    let mut scaler = ff::software::scaling::Context::get(
        frame.format(),
        w,
        h,
        ff::format::Pixel::YUVJ420P,
        w,
        h,
        ff::software::scaling::Flags::BICUBIC
            | ff::software::scaling::Flags::ACCURATE_RND
            | ff::software::scaling::Flags::FULL_CHR_H_INT,
    )?;
    scaler.run(frame, &mut yuv)?;
    let codec = ff::encoder::find(ff::codec::Id::MJPEG).ok_or(ff::Error::EncoderNotFound)?;
    let mut enc = ff::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()?;
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(ff::format::Pixel::YUVJ420P);
    enc.set_time_base(ff::Rational::new(1, 25));
    // Fixed quantiser 2: a near-lossless JPEG.
    let quality = 2 * ffi::FF_QP2LAMBDA;
    // SAFETY: plain fields of the encoder context and of our own frame.
    unsafe {
        (*enc.as_mut_ptr()).flags |= ffi::AV_CODEC_FLAG_QSCALE as i32;
        (*enc.as_mut_ptr()).global_quality = quality;
        (*yuv.as_mut_ptr()).quality = quality;
    }
    let mut enc = enc.open_as(codec)?;
    yuv.set_pts(Some(0));
    enc.send_frame(&yuv)?;
    enc.send_eof()?;
    let mut packet = ff::Packet::empty();
    enc.receive_packet(&mut packet)?;
    Ok(packet.data().map(<[u8]>::to_vec).unwrap_or_default())
}
