//! Decoding only the frames a sample needs, straight into the caller's buffer.
//!
//! The needed frames (sorted, each once) are grouped into windows: a new window starts
//! wherever a keyframe lies after the previous needed frame and at or before the next,
//! since seeking there decodes strictly less than reading on. For each window the
//! demuxer seeks to the window's keyframe, packets go to the decoder in order, and
//! frames nobody needs that no other frame references are not decoded at all (the
//! decoder's `skip_frame = nonref`, set per packet from the frame table). Once the
//! packets of every needed frame of the window are in, the decoder is drained and
//! flushed instead of decoding further. A decoded frame is recognised by its timestamp,
//! cropped to the region that survives the crop, scaled to RGB and turned upright into
//! its slot(s) of the output. If a seek lands late (a demuxer index that disagrees with
//! the packets) the window is retried from the keyframe before, down to the first one.
//! Nothing is allocated per frame: the frame, packet, scaler and scratch buffer live in
//! the [`Decoder`], which a worker keeps for all its videos.

use ffmpeg_next::codec::packet::Mut as _;
use ffmpeg_next::{self as ff, ffi};
use serde::Serialize;

use super::MediaError;
use super::geometry::{Geometry, Rotation, Target};
use super::probe::VideoFile;
use super::scale::{ScaleKey, ScalerCache};

/// What decoding one sample cost.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct DecodeStats {
    /// Frames the decoder produced (frames it skipped are not counted).
    pub frames_decoded: u64,
    /// Output frames filled (clips × T).
    pub frames_kept: u64,
    /// Distinct source frames converted.
    pub frames_converted: u64,
    /// Packets sent to the decoder.
    pub packets: u64,
    /// Seeks made.
    pub seeks: u64,
}

impl std::ops::AddAssign for DecodeStats {
    fn add_assign(&mut self, o: DecodeStats) {
        self.frames_decoded += o.frames_decoded;
        self.frames_kept += o.frames_kept;
        self.frames_converted += o.frames_converted;
        self.packets += o.packets;
        self.seeks += o.seeks;
    }
}

/// How a decoder runs.
#[derive(Debug, Clone, Copy)]
pub struct DecoderOptions {
    /// Decoder threads per video: 1 when every core has its own video, more when the
    /// videos are fewer than the cores.
    pub threads: usize,
}

impl Default for DecoderOptions {
    fn default() -> Self {
        DecoderOptions { threads: 1 }
    }
}

/// A reusable decoding workspace (one per worker thread).
pub struct Decoder {
    frame: ff::frame::Video,
    packet: ff::Packet,
    scalers: ScalerCache,
    scratch: Vec<u8>,
    geometry: Option<Geometry>,
    /// (source frame, output slot), sorted by source frame.
    wanted: Vec<(usize, usize)>,
    /// The distinct needed source frames, ascending, and whether each is done.
    needed: Vec<usize>,
    done: Vec<bool>,
    /// Per needed frame: whether its packet has been sent in the current window.
    sent: Vec<bool>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

fn ffmpeg(path: &std::path::Path, source: ff::Error) -> MediaError {
    MediaError::Ffmpeg {
        path: path.to_owned(),
        source,
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        super::init();
        Decoder {
            frame: ff::frame::Video::empty(),
            packet: ff::Packet::empty(),
            scalers: ScalerCache::default(),
            scratch: Vec::new(),
            geometry: None,
            wanted: Vec::new(),
            needed: Vec::new(),
            done: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Decodes the frames `indices` names (per clip, the source frame of each of its
    /// T slots) into `out`, uint8 RGB `(clips, T, H, W, 3)` for `target`'s H×W.
    /// Returns the cost and the geometry used.
    pub fn extract(
        &mut self,
        video: &mut VideoFile,
        indices: &[Vec<i64>],
        target: &Target,
        opts: &DecoderOptions,
        out: &mut [u8],
    ) -> Result<(DecodeStats, Geometry), MediaError> {
        let path = video.path.clone();
        let frame_bytes = target.width as usize * target.height as usize * 3;
        let slots: usize = indices.iter().map(|c| c.len()).sum();
        if out.len() != slots * frame_bytes {
            return Err(MediaError::Invalid {
                path,
                message: format!(
                    "output buffer holds {} bytes, {} slots of {}x{} RGB need {}",
                    out.len(),
                    slots,
                    target.height,
                    target.width,
                    slots * frame_bytes
                ),
            });
        }
        let n = video.table.len();
        self.wanted.clear();
        let mut slot = 0;
        for clip in indices {
            for &i in clip {
                if i < 0 || i as usize >= n {
                    return Err(MediaError::Invalid {
                        path,
                        message: format!("frame {i} does not exist (the video has {n})"),
                    });
                }
                self.wanted.push((i as usize, slot));
                slot += 1;
            }
        }
        self.wanted.sort_unstable();
        self.needed.clear();
        self.needed.extend(self.wanted.iter().map(|w| w.0));
        self.needed.dedup();
        self.done.clear();
        self.done.resize(self.needed.len(), false);
        self.sent.clear();
        self.sent.resize(self.needed.len(), false);
        self.geometry = None;

        open_decoder(video, opts.threads)?;
        let mut stats = DecodeStats {
            frames_kept: slots as u64,
            ..Default::default()
        };

        // Windows: [start, end) ranges of `needed`, each with the keyframe to seek to.
        let mut w_start = 0;
        while w_start < self.needed.len() {
            let first = self.needed[w_start];
            let kf = video.table.keyframe_before(first);
            let mut w_end = w_start + 1;
            while w_end < self.needed.len() {
                let next_kf =
                    video.table.keyframes[video.table.keyframe_before(self.needed[w_end])].0;
                if next_kf > self.needed[w_end - 1] {
                    break;
                }
                w_end += 1;
            }
            let mut from = kf;
            loop {
                self.decode_window(video, target, w_start, w_end, from, out, &mut stats)?;
                if self.done[w_start..w_end].iter().all(|&d| d) {
                    break;
                }
                if from == 0 {
                    let missing = (w_start..w_end)
                        .find(|&j| !self.done[j])
                        .map(|j| self.needed[j])
                        .unwrap_or(first);
                    return Err(MediaError::Corrupt {
                        path,
                        reason: format!("frame {missing} of {n} does not decode"),
                    });
                }
                // Once from the keyframe before, then from the start: a frame that does
                // not come out then is not there (and retries stay bounded).
                tracing::debug!(video = %path.display(), frame = first, "needed frames missing; retrying from an earlier keyframe");
                from = if from == kf { from - 1 } else { 0 };
            }
            w_start = w_end;
        }
        // Slots that share a source frame: copy from the first slot that has it.
        let mut i = 0;
        while i < self.wanted.len() {
            let (src, first_slot) = self.wanted[i];
            let mut j = i + 1;
            while j < self.wanted.len() && self.wanted[j].0 == src {
                let s = self.wanted[j].1;
                let (a, b) = (first_slot * frame_bytes, s * frame_bytes);
                out.copy_within(a..a + frame_bytes, b);
                j += 1;
            }
            i = j;
        }
        stats.frames_converted = self.needed.len() as u64;
        let geometry = self.geometry.ok_or_else(|| MediaError::Corrupt {
            path: video.path.clone(),
            reason: "no frame decoded".into(),
        })?;
        Ok((stats, geometry))
    }

    /// Reads the next packet of the video stream into `self.packet`; `false` at the end.
    fn next_packet(&mut self, video: &mut VideoFile) -> Result<bool, MediaError> {
        loop {
            // SAFETY: unreferencing the previous packet before reading the next one.
            unsafe { ffi::av_packet_unref(self.packet.as_mut_ptr()) };
            match self.packet.read(&mut video.input) {
                Ok(()) if self.packet.stream() == video.stream => return Ok(true),
                Ok(()) => continue,
                Err(ff::Error::Eof) => return Ok(false),
                Err(e) => {
                    return Err(MediaError::Corrupt {
                        path: video.path.clone(),
                        reason: format!("read error while decoding: {e}"),
                    });
                }
            }
        }
    }

    /// Positions the demuxer on keyframe `kf` (position in the keyframe list): seeks,
    /// and if the demuxer lands on an earlier keyframe (its index may count in DTS or
    /// shift by an edit list), drops packets until the keyframe's own packet, which is
    /// left in `self.packet`. A seek that lands late is retried from the keyframe
    /// before. Returns `false` when the stream ends first.
    fn seek_to(
        &mut self,
        video: &mut VideoFile,
        kf: usize,
        stats: &mut DecodeStats,
    ) -> Result<bool, MediaError> {
        let (_, key_pts) = video.table.keyframes[kf];
        let mut attempt = kf;
        loop {
            let ts = video.table.keyframes[attempt].1;
            // SAFETY: a valid format context and stream index.
            let r = unsafe {
                ffi::av_seek_frame(
                    video.input.as_mut_ptr(),
                    video.stream as i32,
                    ts,
                    ffi::AVSEEK_FLAG_BACKWARD,
                )
            };
            if r < 0 {
                return Err(MediaError::Corrupt {
                    path: video.path.clone(),
                    reason: format!(
                        "cannot seek to frame {}: {}",
                        video.table.keyframes[attempt].0,
                        ff::Error::from(r)
                    ),
                });
            }
            stats.seeks += 1;
            video.decoder.as_mut().expect("opened by extract").flush();
            let first = if self.next_packet(video)? {
                self.packet.pts().or(self.packet.dts())
            } else {
                None
            };
            match first {
                Some(p) if p <= key_pts => break,
                _ if attempt == 0 => {
                    return Err(MediaError::Corrupt {
                        path: video.path.clone(),
                        reason: "seeking to the first keyframe lands past it".into(),
                    });
                }
                _ => attempt -= 1,
            }
        }
        if kf == 0 {
            // From the start: every packet counts.
            return Ok(true);
        }
        loop {
            if self.packet.is_key() && self.packet.pts().or(self.packet.dts()) == Some(key_pts) {
                return Ok(true);
            }
            if !self.next_packet(video)? {
                return Ok(false);
            }
        }
    }

    /// Decodes from keyframe `kf` (position in the keyframe list) until every needed
    /// frame of `needed[w_start..w_end]` has come out or the stream ends.
    #[allow(clippy::too_many_arguments)]
    fn decode_window(
        &mut self,
        video: &mut VideoFile,
        target: &Target,
        w_start: usize,
        w_end: usize,
        kf: usize,
        out: &mut [u8],
        stats: &mut DecodeStats,
    ) -> Result<(), MediaError> {
        let path = video.path.clone();
        let mut have_packet = self.seek_to(video, kf, stats)?;
        for s in &mut self.sent[w_start..w_end] {
            *s = false;
        }
        let mut pending = (w_start..w_end).filter(|&j| !self.done[j]).count();
        let mut unsent = pending;
        let mut eof = false;
        if !have_packet {
            video
                .decoder
                .as_mut()
                .expect("opened")
                .send_eof()
                .map_err(|e| ffmpeg(&path, e))?;
            eof = true;
        }
        while pending > 0 {
            if unsent > 0 && !eof {
                if !have_packet && !self.next_packet(video)? {
                    eof = true;
                    video
                        .decoder
                        .as_mut()
                        .expect("opened")
                        .send_eof()
                        .map_err(|e| ffmpeg(&path, e))?;
                }
                have_packet = false;
                if !eof {
                    let idx = self
                        .packet
                        .pts()
                        .or(self.packet.dts())
                        .and_then(|ts| video.table.index_of(ts));
                    let needed_at = idx.and_then(|i| {
                        self.needed[w_start..w_end]
                            .binary_search(&i)
                            .ok()
                            .map(|j| j + w_start)
                    });
                    let skip = match needed_at {
                        Some(j) => {
                            if !self.sent[j] {
                                self.sent[j] = true;
                                if !self.done[j] {
                                    unsent -= 1;
                                }
                            }
                            ffi::AVDiscard::AVDISCARD_DEFAULT
                        }
                        None => ffi::AVDiscard::AVDISCARD_NONREF,
                    };
                    let decoder = video.decoder.as_mut().expect("opened");
                    // SAFETY: a plain field of the open codec context.
                    unsafe { (*decoder.as_mut_ptr()).skip_frame = skip };
                    stats.packets += 1;
                    match decoder.send_packet(&self.packet) {
                        Ok(()) => {}
                        // Damaged data: the decoder conceals it; a needed frame that
                        // never comes out is reported by the caller.
                        Err(ff::Error::InvalidData) => {
                            tracing::debug!(video = %path.display(), "invalid data in a packet");
                        }
                        Err(e) => return Err(ffmpeg(&path, e)),
                    }
                    if unsent == 0 {
                        // Everything needed is in: drain instead of decoding further.
                        decoder.send_eof().map_err(|e| ffmpeg(&path, e))?;
                        eof = true;
                    }
                }
            }
            // Take every frame the decoder has ready.
            let decoder = video.decoder.as_mut().expect("opened");
            loop {
                match decoder.receive_frame(&mut self.frame) {
                    Ok(()) => {}
                    Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {
                        if eof {
                            return Ok(());
                        }
                        break;
                    }
                    // Drained: whatever did not come out is not there.
                    Err(ff::Error::Eof) => return Ok(()),
                    Err(ff::Error::InvalidData) => continue,
                    Err(e) => return Err(ffmpeg(&path, e)),
                }
                stats.frames_decoded += 1;
                let Some(i) = self
                    .frame
                    .timestamp()
                    .and_then(|ts| video.table.index_of(ts))
                else {
                    continue;
                };
                let Ok(j) = self.needed[w_start..w_end].binary_search(&i) else {
                    continue;
                };
                let j = j + w_start;
                if self.done[j] {
                    continue;
                }
                let first_slot = self.wanted[self.wanted.partition_point(|w| w.0 < i)].1;
                self.convert(
                    &video.path,
                    video.sar,
                    video.rotation,
                    target,
                    first_slot,
                    out,
                )?;
                self.done[j] = true;
                pending -= 1;
                if pending == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Crops, scales and turns the current frame into output slot `slot`.
    #[allow(clippy::too_many_arguments)]
    fn convert(
        &mut self,
        path: &std::path::Path,
        sar: (u32, u32),
        rotation: Rotation,
        target: &Target,
        slot: usize,
        out: &mut [u8],
    ) -> Result<(), MediaError> {
        let (w, h) = (self.frame.width(), self.frame.height());
        let geometry = match self.geometry {
            Some(g) if g.stored_w == w && g.stored_h == h => g,
            _ => {
                let g = Geometry::plan(w, h, sar, rotation, target).map_err(|e| {
                    MediaError::Corrupt {
                        path: path.to_owned(),
                        reason: e.0,
                    }
                })?;
                self.geometry = Some(g);
                g
            }
        };
        let frame_bytes = geometry.out_bytes();
        // SAFETY: the frame is a valid decoded picture owned by this decoder until the
        // next receive_frame; cropping only moves its data pointers.
        let raw = unsafe { &mut *self.frame.as_mut_ptr() };
        let src = geometry.src;
        raw.crop_left = src.x as usize;
        raw.crop_top = src.y as usize;
        raw.crop_right = (w - src.x - src.w) as usize;
        raw.crop_bottom = (h - src.y - src.h) as usize;
        // SAFETY: crop fields are within the picture (the geometry guarantees it).
        let r = unsafe { ffi::av_frame_apply_cropping(raw, ffi::AV_FRAME_CROP_UNALIGNED as i32) };
        if r < 0 {
            return Err(MediaError::Unsupported {
                path: path.to_owned(),
                reason: format!(
                    "cannot crop pixel format {}",
                    super::enums::pixel_format_name(raw.format)
                ),
            });
        }
        // The YCbCr matrix and range of the picture (yuvj formats are full range).
        use ffi::AVPixelFormat::*;
        // SAFETY: enum-typed fields of the frame, read as the numbers they hold.
        let (range, colorspace) = unsafe {
            (
                super::enums::raw(std::ptr::addr_of!(raw.color_range)),
                super::enums::raw(std::ptr::addr_of!(raw.colorspace)),
            )
        };
        let full_range = super::enums::is_full_range(range)
            || [
                AV_PIX_FMT_YUVJ420P,
                AV_PIX_FMT_YUVJ422P,
                AV_PIX_FMT_YUVJ444P,
                AV_PIX_FMT_YUVJ440P,
                AV_PIX_FMT_YUVJ411P,
            ]
            .iter()
            .any(|&f| f as i32 == raw.format);
        let key = ScaleKey {
            format: raw.format,
            src_w: src.w,
            src_h: src.h,
            dst_w: geometry.scaled_w,
            dst_h: geometry.scaled_h,
            filter: target.filter,
            colorspace,
            full_range,
        };
        let scaler = self
            .scalers
            .get(key)
            .map_err(|reason| MediaError::Unsupported {
                path: path.to_owned(),
                reason,
            })?;
        let invalid = |message| MediaError::Invalid {
            path: path.to_owned(),
            message,
        };
        let dst = &mut out[slot * frame_bytes..(slot + 1) * frame_bytes];
        if geometry.direct() {
            // SAFETY: a decoded frame of this decoder, cropped by FFmpeg.
            unsafe { scaler.scale(raw, dst, geometry.out_w as usize * 3) }.map_err(invalid)?;
        } else {
            let stride = geometry.scaled_w as usize * 3;
            let need = stride * geometry.scaled_h as usize;
            if self.scratch.len() < need {
                self.scratch.resize(need, 0);
            }
            // SAFETY: as above, into the scratch picture.
            unsafe { scaler.scale(raw, &mut self.scratch[..need], stride) }.map_err(invalid)?;
            geometry.blit(&self.scratch[..need], stride, dst);
        }
        Ok(())
    }
}

/// Opens the video's decoder with `threads` threads (reopening if the count changed).
fn open_decoder(video: &mut VideoFile, threads: usize) -> Result<(), MediaError> {
    let threads = threads.max(1);
    if video.decoder.is_some() && video.decoder_threads == threads {
        return Ok(());
    }
    let path = video.path.clone();
    let params = video
        .input
        .stream(video.stream)
        .expect("stream chosen at open")
        .parameters();
    let time_base = video
        .input
        .stream(video.stream)
        .expect("stream")
        .time_base();
    let mut ctx =
        ff::codec::context::Context::from_parameters(params).map_err(|e| ffmpeg(&path, e))?;
    ctx.set_threading(ff::codec::threading::Config {
        kind: if threads > 1 {
            ff::codec::threading::Type::Frame
        } else {
            ff::codec::threading::Type::None
        },
        count: threads,
        ..Default::default()
    });
    // SAFETY: plain fields of a context not opened yet: frames' best-effort timestamps
    // in the stream time base, and no picture larger than 8K (a stream may change size).
    unsafe {
        (*ctx.as_mut_ptr()).pkt_timebase = time_base.into();
        super::open::bound_decoder(ctx.as_mut_ptr());
    }
    let decoder = ctx.decoder().video().map_err(|e| match e {
        ff::Error::DecoderNotFound => MediaError::Unsupported {
            path: path.clone(),
            reason: format!("no decoder for codec {}", video.probe.codec),
        },
        e => MediaError::Corrupt {
            path: path.clone(),
            reason: format!("the {} decoder refuses the stream: {e}", video.probe.codec),
        },
    })?;
    video.decoder = Some(decoder);
    video.decoder_threads = threads;
    Ok(())
}

impl VideoFile {
    /// Decodes every frame (no conversion): `probe --decode`'s full check. Returns the
    /// frames decoded; a stream that stops decoding early is corrupt.
    pub fn decode_all(&mut self, threads: usize) -> Result<u64, MediaError> {
        open_decoder(self, threads)?;
        let path = self.path.clone();
        // SAFETY: valid context and stream.
        let r = unsafe {
            ffi::av_seek_frame(
                self.input.as_mut_ptr(),
                self.stream as i32,
                self.table.keyframes[0].1,
                ffi::AVSEEK_FLAG_BACKWARD,
            )
        };
        if r < 0 {
            return Err(MediaError::Corrupt {
                path,
                reason: format!("cannot seek to the start: {}", ff::Error::from(r)),
            });
        }
        let decoder = self.decoder.as_mut().expect("opened");
        decoder.flush();
        let mut packet = ff::Packet::empty();
        let mut frame = ff::frame::Video::empty();
        let mut frames = 0u64;
        let mut errors = 0u64;
        let mut eof = false;
        loop {
            if !eof {
                // SAFETY: as in `decode_window`.
                unsafe { ffi::av_packet_unref(packet.as_mut_ptr()) };
                match packet.read(&mut self.input) {
                    Ok(()) if packet.stream() != self.stream => continue,
                    Ok(()) => match decoder.send_packet(&packet) {
                        Ok(()) => {}
                        Err(ff::Error::InvalidData) => errors += 1,
                        Err(e) => return Err(ffmpeg(&path, e)),
                    },
                    Err(ff::Error::Eof) => {
                        eof = true;
                        decoder.send_eof().map_err(|e| ffmpeg(&path, e))?;
                    }
                    Err(e) => {
                        return Err(MediaError::Corrupt {
                            path,
                            reason: format!("read error after {frames} frames: {e}"),
                        });
                    }
                }
            }
            loop {
                match decoder.receive_frame(&mut frame) {
                    Ok(()) => frames += 1,
                    Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => break,
                    Err(ff::Error::Eof) => {
                        let expected = self.table.len() as u64;
                        if frames < expected || errors > 0 {
                            return Err(MediaError::Corrupt {
                                path,
                                reason: format!(
                                    "{frames} of {expected} frames decode ({errors} damaged packets)"
                                ),
                            });
                        }
                        return Ok(frames);
                    }
                    Err(ff::Error::InvalidData) => errors += 1,
                    Err(e) => return Err(ffmpeg(&path, e)),
                }
            }
        }
    }
}
