//! H.264 encoding of raw RGB frames into an MP4 file.
//!
//! Owns the one place pmv-data writes video: the built-in demo renders its synthetic
//! dataset frame by frame and hands each frame here. Frames are converted to YUV 4:2:0
//! with swscale (accurate rounding, full chroma interpolation) and encoded with the
//! linked FFmpeg's H.264 encoder (libx264 on Debian). It never reads or decodes video.

use std::path::{Path, PathBuf};

use ff::format::Pixel;
use ff::software::scaling;
use ffmpeg_next as ff;

#[derive(Debug, thiserror::Error)]
#[error("encoding {path}: {message}")]
pub struct EncodeError {
    pub path: PathBuf,
    pub message: String,
}

/// How to encode.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// Frames per second (constant frame rate).
    pub fps: u32,
    /// Frames between keyframes.
    pub gop: u32,
    /// x264 constant rate factor: lower is better quality, 0 lossless.
    pub crf: u32,
    /// x264 preset (`ultrafast` … `veryslow`).
    pub preset: String,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            fps: 30,
            gop: 30,
            crf: 20,
            preset: "veryfast".into(),
        }
    }
}

/// Writes RGB frames of one size into an H.264 MP4 (moov atom first, so the file
/// streams).
pub struct Mp4Writer {
    path: PathBuf,
    octx: ff::format::context::Output,
    encoder: ff::encoder::Video,
    scaler: scaling::Context,
    rgb: ff::frame::Video,
    yuv: ff::frame::Video,
    encoder_time_base: ff::Rational,
    stream_time_base: ff::Rational,
    width: u32,
    height: u32,
    next_pts: i64,
}

impl Mp4Writer {
    /// Creates `path` for `width`×`height` frames (both even: 4:2:0 chroma).
    pub fn create(
        path: &Path,
        width: u32,
        height: u32,
        options: &EncodeOptions,
    ) -> Result<Mp4Writer, EncodeError> {
        let fail = |message: String| EncodeError {
            path: path.to_owned(),
            message,
        };
        let ff_err = |what: &str, e: ff::Error| fail(format!("{what}: {e}"));
        if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
            return Err(fail(format!(
                "{width}x{height}: width and height must be even and non-zero"
            )));
        }
        if options.fps == 0 || options.gop == 0 {
            return Err(fail("fps and gop must be positive".into()));
        }
        ff::init().map_err(|e| ff_err("initialising FFmpeg", e))?;
        // The encoder's statistics are noise on a user's terminal; errors still show.
        ff::util::log::set_level(ff::util::log::Level::Error);
        // Always MP4, whatever the name ends in (callers write to temporary names).
        let mut octx =
            ff::format::output_as(&path, "mp4").map_err(|e| ff_err("opening the output", e))?;
        let codec = ff::encoder::find_by_name("libx264")
            .or_else(|| ff::encoder::find(ff::codec::Id::H264))
            .ok_or_else(|| fail("this FFmpeg has no H.264 encoder".into()))?;
        let global_header = octx
            .format()
            .flags()
            .contains(ff::format::Flags::GLOBAL_HEADER);
        let mut ost = octx
            .add_stream(codec)
            .map_err(|e| ff_err("adding the video stream", e))?;
        let mut enc = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| ff_err("creating the encoder", e))?;
        let time_base = ff::Rational::new(1, options.fps as i32);
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(time_base);
        enc.set_frame_rate(Some(ff::Rational::new(options.fps as i32, 1)));
        enc.set_gop(options.gop);
        if global_header {
            enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        }
        let mut opts = ff::Dictionary::new();
        opts.set("preset", &options.preset);
        opts.set("crf", &options.crf.to_string());
        // One thread: callers encode several files in parallel, and the output must not
        // depend on thread timing.
        opts.set("threads", "1");
        let encoder = enc
            .open_with(opts)
            .map_err(|e| ff_err("opening the H.264 encoder", e))?;
        ost.set_parameters(&encoder);
        ost.set_time_base(time_base);
        let mut mux_opts = ff::Dictionary::new();
        mux_opts.set("movflags", "+faststart");
        octx.write_header_with(mux_opts)
            .map_err(|e| ff_err("writing the header", e))?;
        let stream_time_base = octx.stream(0).map(|s| s.time_base()).unwrap_or(time_base);
        let scaler = scaling::Context::get(
            Pixel::RGB24,
            width,
            height,
            Pixel::YUV420P,
            width,
            height,
            scaling::Flags::BICUBIC
                | scaling::Flags::ACCURATE_RND
                | scaling::Flags::FULL_CHR_H_INT
                | scaling::Flags::FULL_CHR_H_INP,
        )
        .map_err(|e| ff_err("creating the colour converter", e))?;
        Ok(Mp4Writer {
            path: path.to_owned(),
            octx,
            encoder,
            scaler,
            rgb: ff::frame::Video::new(Pixel::RGB24, width, height),
            yuv: ff::frame::Video::new(Pixel::YUV420P, width, height),
            encoder_time_base: time_base,
            stream_time_base,
            width,
            height,
            next_pts: 0,
        })
    }

    fn fail(&self, what: &str, e: ff::Error) -> EncodeError {
        EncodeError {
            path: self.path.clone(),
            message: format!("{what}: {e}"),
        }
    }

    /// Appends one frame: `width * height * 3` bytes of packed RGB, rows top to bottom.
    pub fn push_rgb(&mut self, rgb: &[u8]) -> Result<(), EncodeError> {
        let row = self.width as usize * 3;
        if rgb.len() != row * self.height as usize {
            return Err(EncodeError {
                path: self.path.clone(),
                message: format!(
                    "frame of {} bytes, expected {}x{}x3",
                    rgb.len(),
                    self.width,
                    self.height
                ),
            });
        }
        let stride = self.rgb.stride(0);
        let plane = self.rgb.data_mut(0);
        for (y, src) in rgb.chunks_exact(row).enumerate() {
            plane[y * stride..y * stride + row].copy_from_slice(src);
        }
        self.scaler
            .run(&self.rgb, &mut self.yuv)
            .map_err(|e| self.fail("converting to YUV", e))?;
        self.yuv.set_pts(Some(self.next_pts));
        self.next_pts += 1;
        self.encoder
            .send_frame(&self.yuv)
            .map_err(|e| self.fail("encoding", e))?;
        self.write_packets()
    }

    fn write_packets(&mut self) -> Result<(), EncodeError> {
        let mut packet = ff::Packet::empty();
        loop {
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.set_stream(0);
                    packet.rescale_ts(self.encoder_time_base, self.stream_time_base);
                    packet
                        .write_interleaved(&mut self.octx)
                        .map_err(|e| self.fail("writing a packet", e))?;
                }
                Err(ff::Error::Other {
                    errno: ff::util::error::EAGAIN,
                })
                | Err(ff::Error::Eof) => return Ok(()),
                Err(e) => return Err(self.fail("encoding", e)),
            }
        }
    }

    /// Frames written so far.
    pub fn frames(&self) -> i64 {
        self.next_pts
    }

    /// Drains the encoder and finishes the file.
    pub fn finish(mut self) -> Result<(), EncodeError> {
        self.encoder
            .send_eof()
            .map_err(|e| self.fail("flushing the encoder", e))?;
        self.write_packets()?;
        self.octx
            .write_trailer()
            .map_err(|e| self.fail("writing the trailer", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_playable_mp4() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.mp4");
        let (w, h) = (64u32, 96u32);
        let mut wr = Mp4Writer::create(&path, w, h, &EncodeOptions::default()).unwrap();
        for i in 0..45u32 {
            let frame: Vec<u8> = (0..w * h * 3)
                .map(|p| ((p / 3 + i * 5) % 256) as u8)
                .collect();
            wr.push_rgb(&frame).unwrap();
        }
        assert_eq!(wr.frames(), 45);
        wr.finish().unwrap();
        // Read it back with FFmpeg: one H.264 stream of the right size and length.
        let ictx = ff::format::input(&path).unwrap();
        let st = ictx.streams().best(ff::media::Type::Video).unwrap();
        let params = st.parameters();
        assert_eq!(params.id(), ff::codec::Id::H264);
        let dec = ff::codec::context::Context::from_parameters(params)
            .unwrap()
            .decoder()
            .video()
            .unwrap();
        assert_eq!((dec.width(), dec.height()), (w, h));
        assert_eq!(st.frames(), 45);
        let head = std::fs::read(&path).unwrap();
        assert_eq!(&head[4..8], b"ftyp");
    }

    #[test]
    fn odd_sizes_and_short_frames_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.mp4");
        let e = Mp4Writer::create(&path, 63, 96, &EncodeOptions::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("even"), "{e}");
        let mut wr = Mp4Writer::create(&path, 64, 96, &EncodeOptions::default()).unwrap();
        assert!(wr.push_rgb(&[0; 10]).is_err());
    }
}
