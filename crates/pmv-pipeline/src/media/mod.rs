//! The media layer: FFmpeg (libavformat, libavcodec, libswscale) through ffmpeg-next.
//!
//! Owns every call into FFmpeg: what the linked FFmpeg offers ([`info`], for `doctor`),
//! the one way a file reaches FFmpeg ([`open`]: a file it has opened, bounded first, MP4
//! sample tables checked by [`isobmff`], FLV keyframe indexes by [`flv`]), probing a file
//! ([`probe`]: container, codec, geometry, rotation, frame rates, a frame table read from
//! the packets without decoding), sampling frame indices on an fps-normalised timeline
//! ([`sample`]), the crop and scale geometry ([`geometry`]), and decoding only the frames
//! a sample needs, seeking to the keyframe before each window, into a caller's buffer
//! ([`decode`]). It never writes files and never touches the catalog; the shard stage
//! decides what a failure means for the data.

pub mod decode;
pub mod enums;
pub mod flv;
pub mod geometry;
pub mod image;
pub mod isobmff;
pub mod open;
pub mod probe;
pub mod sample;
mod scale;

use std::path::PathBuf;
use std::sync::Once;

pub mod encode;

use serde::Serialize;

/// Streams in one file (a stream costs a decoder during stream analysis): refused from
/// the container's own tables first ([`isobmff`]), then by FFmpeg (`max_streams`, [`open`]).
pub const MAX_STREAMS: u32 = 16;

pub use decode::{DecodeStats, Decoder, DecoderOptions};
pub use geometry::{Geometry, Rect, Rotation};
pub use probe::{FrameTable, Probe, VideoFile};
pub use sample::{Sampling, sample_indices};

/// What went wrong with a media file. [`MediaError::is_corrupt`] tells a file that is
/// not a decodable video (quarantine it) from a failure that is not the file's fault.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The file could not be read (missing, permissions, I/O error).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a decodable video: not a media file, no video stream, truncated,
    /// or frames that do not decode.
    #[error("{path}: not a decodable video: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// The file may be a valid video but is beyond what pmv-data reads (pictures larger
    /// than 8K, more samples than it indexes, encrypted): refused like a corrupt file.
    #[error("{path}: refused: {reason}")]
    Refused { path: PathBuf, reason: String },
    /// The video may be fine but this FFmpeg cannot decode it (no decoder for its codec,
    /// a pixel format the scaler does not take).
    #[error("{path}: cannot be decoded by this FFmpeg build: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    /// The caller asked for something impossible (an output buffer of the wrong size).
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// FFmpeg itself failed (initialisation, out of memory).
    #[error("{path}: FFmpeg: {source}")]
    Ffmpeg {
        path: PathBuf,
        #[source]
        source: ffmpeg_next::Error,
    },
}

impl MediaError {
    /// True when the file itself is bad, or refused, and belongs in quarantine.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            MediaError::Corrupt { .. } | MediaError::Refused { .. }
        )
    }

    /// The reason without the path (what a `.reason.txt` says).
    pub fn reason(&self) -> String {
        match self {
            MediaError::Corrupt { reason, .. }
            | MediaError::Refused { reason, .. }
            | MediaError::Unsupported { reason, .. } => reason.clone(),
            MediaError::Io { source, .. } => source.to_string(),
            MediaError::Invalid { message, .. } => message.clone(),
            MediaError::Ffmpeg { source, .. } => source.to_string(),
        }
    }
}

/// Initialises FFmpeg once per process, keeps its own logging quiet (errors only):
/// every problem a file has reaches the caller as a [`MediaError`] instead; and caps any
/// single allocation FFmpeg makes at [`open::MAX_ALLOC`].
pub(crate) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // ffmpeg_next::init only registers devices and sets nothing that can fail here.
        let _ = ffmpeg_next::init();
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
        // SAFETY: sets one global of libavutil; av_malloc reads it on every call.
        unsafe { ffmpeg_next::ffi::av_max_alloc(open::MAX_ALLOC) };
    });
}

/// Decoders the seed datasets need: H.264 (PMV-400, xinpianchang), HEVC, VP9 and AV1
/// (newer Douyin and Kinetics files), and MJPEG/PNG for covers.
const DECODERS: [(&str, ffmpeg_next::codec::Id); 6] = [
    ("h264", ffmpeg_next::codec::Id::H264),
    ("hevc", ffmpeg_next::codec::Id::HEVC),
    ("vp9", ffmpeg_next::codec::Id::VP9),
    ("av1", ffmpeg_next::codec::Id::AV1),
    ("mjpeg", ffmpeg_next::codec::Id::MJPEG),
    ("png", ffmpeg_next::codec::Id::PNG),
];

#[derive(Debug, Clone, Serialize)]
pub struct MediaInfo {
    pub libavformat: String,
    pub libavcodec: String,
    pub libswscale: String,
    pub libavutil: String,
    /// Decoder name and whether this FFmpeg has it.
    pub decoders: Vec<(String, bool)>,
}

fn version(v: u32) -> String {
    format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// What the linked FFmpeg offers.
pub fn info() -> Result<MediaInfo, ffmpeg_next::Error> {
    init();
    Ok(MediaInfo {
        libavformat: version(ffmpeg_next::format::version()),
        libavcodec: version(ffmpeg_next::codec::version()),
        libswscale: version(ffmpeg_next::software::scaling::version()),
        libavutil: version(ffmpeg_next::util::version()),
        decoders: DECODERS
            .iter()
            .map(|(name, id)| (name.to_string(), ffmpeg_next::decoder::find(*id).is_some()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ffmpeg_links_and_decodes_h264() {
        let info = super::info().unwrap();
        assert!(info.libavcodec.starts_with(|c: char| c.is_ascii_digit()));
        assert!(info.decoders.iter().any(|(n, ok)| n == "h264" && *ok));
    }
}
