//! Geometry: which region of a stored picture becomes the output, and how.
//!
//! A video is stored with a coded size, a sample aspect ratio (SAR: non-square pixels)
//! and possibly a display rotation (phones store portrait video landscape and say
//! "rotate 90°"). Its upright display picture is the stored one widened by the SAR and
//! rotated. The fit (`cover`, `contain`, `short-side`) is decided on that upright
//! picture; the part of it that survives the centre crop is mapped back to a rectangle
//! of the stored picture, and only that rectangle is scaled (straight to the output
//! size, in stored orientation) and then turned upright while it is copied into the
//! output. Rectangles have even origins and sizes where the picture allows it, so
//! subsampled chroma is never split (as FFmpeg's `crop` filter does). Pure arithmetic
//! and pixel copies; no FFmpeg call lives here.

use serde::Serialize;

use pmv_core::frame_recipe::{Filter, Fit, FrameParams};

/// The clockwise rotation that turns the stored picture upright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Rotation {
    R0,
    R90,
    R180,
    R270,
}

impl Rotation {
    /// From a display rotation in degrees, clockwise (FFmpeg's `-av_display_rotation_get`),
    /// rounded to the nearest quarter turn.
    pub fn from_clockwise_degrees(deg: f64) -> Rotation {
        if !deg.is_finite() {
            return Rotation::R0;
        }
        let q = ((deg / 90.0).round() as i64).rem_euclid(4);
        match q {
            1 => Rotation::R90,
            2 => Rotation::R180,
            3 => Rotation::R270,
            _ => Rotation::R0,
        }
    }

    pub fn degrees(self) -> u32 {
        match self {
            Rotation::R0 => 0,
            Rotation::R90 => 90,
            Rotation::R180 => 180,
            Rotation::R270 => 270,
        }
    }

    /// Whether width and height swap.
    pub fn swaps(self) -> bool {
        matches!(self, Rotation::R90 | Rotation::R270)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// The spatial part of a recipe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub height: u32,
    pub width: u32,
    pub fit: Fit,
    pub short_side: Option<u32>,
    pub filter: Filter,
}

impl From<&FrameParams> for Target {
    fn from(p: &FrameParams) -> Target {
        Target {
            height: p.height,
            width: p.width,
            fit: p.fit,
            short_side: p.short_side,
            filter: p.filter,
        }
    }
}

/// How one stored picture size becomes the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Geometry {
    /// Stored (coded) picture size.
    pub stored_w: u32,
    pub stored_h: u32,
    /// Upright display size (SAR applied, rotated).
    pub display_w: u32,
    pub display_h: u32,
    pub rotation: Rotation,
    /// The region of the stored picture that is scaled.
    pub src: Rect,
    /// The same region in upright display pixels of the unwidened picture (what
    /// `crop=w:h:x:y` after FFmpeg's autorotation takes when the SAR is 1).
    pub display_src: Rect,
    /// Size the region is scaled to, in stored orientation.
    pub scaled_w: u32,
    pub scaled_h: u32,
    /// Where the scaled, upright region lands in the output (`contain` pads around it).
    pub place: Rect,
    pub out_w: u32,
    pub out_h: u32,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct GeometryError(pub String);

/// An even length near `v` within `2..=max` (1 for a 1-pixel picture). Even even at
/// the full length of an odd side: subsampled chroma has no half pixels (FFmpeg's `crop`
/// rounds the same way).
fn even_len(v: f64, max: u32) -> u32 {
    if max < 2 {
        return 1;
    }
    (((v / 2.0).round() as u32) * 2).clamp(2, max & !1)
}

/// The centred origin of a length `len` inside `total`, rounded down to even.
fn centred(total: u32, len: u32) -> u32 {
    ((total - len) / 2) & !1
}

impl Geometry {
    /// Plans the output of a stored `w`×`h` picture with sample aspect ratio
    /// `sar` (num, den; 0 means square) and `rotation`.
    pub fn plan(
        w: u32,
        h: u32,
        sar: (u32, u32),
        rotation: Rotation,
        t: &Target,
    ) -> Result<Geometry, GeometryError> {
        if w == 0 || h == 0 {
            return Err(GeometryError(format!("picture size {w}x{h} is empty")));
        }
        let ratio = if sar.0 == 0 || sar.1 == 0 {
            1.0
        } else {
            sar.0 as f64 / sar.1 as f64
        };
        if !(0.01..=100.0).contains(&ratio) {
            return Err(GeometryError(format!(
                "sample aspect ratio {}:{} is absurd",
                sar.0, sar.1
            )));
        }
        let sar = ratio;
        // Unrotated display size (stored width widened by the SAR), then upright.
        let (uw, uh) = (w as f64 * sar, h as f64);
        let (dw, dh) = if rotation.swaps() { (uh, uw) } else { (uw, uh) };
        let (ow, oh) = (t.width as f64, t.height as f64);

        // Scale factor (output px per display px) and the visible display region.
        let cover = (ow / dw).max(oh / dh);
        let (s, region_w, region_h) = match t.fit {
            Fit::Cover => (cover, ow / cover, oh / cover),
            Fit::ShortSide => {
                let short = t.short_side.unwrap_or(t.height.min(t.width)) as f64;
                let s = (short / dw.min(dh)).max(cover);
                (s, ow / s, oh / s)
            }
            Fit::Contain => {
                let s = (ow / dw).min(oh / dh);
                (s, dw, dh)
            }
        };
        // The region in unrotated display coordinates, then in stored pixels.
        let (ur_w, ur_h) = if rotation.swaps() {
            (region_h, region_w)
        } else {
            (region_w, region_h)
        };
        let sw = even_len(ur_w / sar, w);
        let sh = even_len(ur_h, h);
        let src = Rect {
            x: centred(w, sw),
            y: centred(h, sh),
            w: sw,
            h: sh,
        };
        // Where it goes in the output.
        let place = match t.fit {
            Fit::Contain => {
                let pw = ((dw * s).round() as u32).clamp(1, t.width);
                let ph = ((dh * s).round() as u32).clamp(1, t.height);
                Rect {
                    x: (t.width - pw) / 2,
                    y: (t.height - ph) / 2,
                    w: pw,
                    h: ph,
                }
            }
            _ => Rect {
                x: 0,
                y: 0,
                w: t.width,
                h: t.height,
            },
        };
        let (scaled_w, scaled_h) = if rotation.swaps() {
            (place.h, place.w)
        } else {
            (place.w, place.h)
        };
        let display_src = match rotation {
            Rotation::R0 => src,
            Rotation::R90 => Rect {
                x: h - src.y - src.h,
                y: src.x,
                w: src.h,
                h: src.w,
            },
            Rotation::R180 => Rect {
                x: w - src.x - src.w,
                y: h - src.y - src.h,
                w: src.w,
                h: src.h,
            },
            Rotation::R270 => Rect {
                x: src.y,
                y: w - src.x - src.w,
                w: src.h,
                h: src.w,
            },
        };
        Ok(Geometry {
            stored_w: w,
            stored_h: h,
            display_w: dw.round().max(1.0) as u32,
            display_h: dh.round().max(1.0) as u32,
            rotation,
            src,
            display_src,
            scaled_w,
            scaled_h,
            place,
            out_w: t.width,
            out_h: t.height,
        })
    }

    /// Whether the scaler can write straight into the output (no turn, no padding).
    pub fn direct(&self) -> bool {
        self.rotation == Rotation::R0 && self.place.w == self.out_w && self.place.h == self.out_h
    }

    /// Bytes of one RGB output frame.
    pub fn out_bytes(&self) -> usize {
        self.out_w as usize * self.out_h as usize * 3
    }

    /// Copies a scaled RGB picture (`scaled_w`×`scaled_h`, stored orientation, rows
    /// `src_stride` bytes apart) upright into `out` (`out_w`×`out_h` RGB, tightly
    /// packed) at [`Self::place`]; the rest of `out` becomes black.
    pub fn blit(&self, src: &[u8], src_stride: usize, out: &mut [u8]) {
        let ow = self.out_w as usize;
        let p = self.place;
        if p.w != self.out_w || p.h != self.out_h {
            out.fill(0);
        }
        let (sw, sh) = (self.scaled_w as usize, self.scaled_h as usize);
        for yy in 0..p.h as usize {
            let row = &mut out[((p.y as usize + yy) * ow + p.x as usize) * 3..][..p.w as usize * 3];
            match self.rotation {
                Rotation::R0 => row.copy_from_slice(&src[yy * src_stride..][..sw * 3]),
                Rotation::R180 => {
                    let s = &src[(sh - 1 - yy) * src_stride..][..sw * 3];
                    for (xx, px) in row.chunks_exact_mut(3).enumerate() {
                        px.copy_from_slice(&s[(sw - 1 - xx) * 3..][..3]);
                    }
                }
                // Clockwise: output (X, Y) shows stored (Y, sh - 1 - X).
                Rotation::R90 => {
                    for (xx, px) in row.chunks_exact_mut(3).enumerate() {
                        let o = (sh - 1 - xx) * src_stride + yy * 3;
                        px.copy_from_slice(&src[o..o + 3]);
                    }
                }
                // Counter-clockwise: output (X, Y) shows stored (sw - 1 - Y, X).
                Rotation::R270 => {
                    for (xx, px) in row.chunks_exact_mut(3).enumerate() {
                        let o = xx * src_stride + (sw - 1 - yy) * 3;
                        px.copy_from_slice(&src[o..o + 3]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(h: u32, w: u32, fit: Fit, short: Option<u32>) -> Target {
        Target {
            height: h,
            width: w,
            fit,
            short_side: short,
            filter: Filter::Bicubic,
        }
    }

    #[test]
    fn portrait_short_side_centre_crop() {
        let g = Geometry::plan(
            720,
            1280,
            (1, 1),
            Rotation::R0,
            &target(224, 224, Fit::ShortSide, Some(224)),
        )
        .unwrap();
        assert_eq!(
            g.src,
            Rect {
                x: 0,
                y: 280,
                w: 720,
                h: 720
            }
        );
        assert_eq!((g.scaled_w, g.scaled_h), (224, 224));
        assert!(g.direct());
        // Short side 256, crop 256x192 (HxW): region 540x720 of the 720x1280 picture.
        let g = Geometry::plan(
            720,
            1280,
            (1, 1),
            Rotation::R0,
            &target(256, 192, Fit::ShortSide, Some(256)),
        )
        .unwrap();
        assert_eq!(
            g.src,
            Rect {
                x: 90,
                y: 280,
                w: 540,
                h: 720
            }
        );
    }

    #[test]
    fn cover_keeps_portrait_portrait() {
        let g = Geometry::plan(
            720,
            1280,
            (1, 1),
            Rotation::R0,
            &target(288, 192, Fit::Cover, None),
        )
        .unwrap();
        // 720 wide -> 192: scale 0.2667; 288 high needs 1080 source rows.
        assert_eq!(
            g.src,
            Rect {
                x: 0,
                y: 100,
                w: 720,
                h: 1080
            }
        );
        // A landscape video under a portrait crop: the middle 720x1080 strip.
        let g = Geometry::plan(
            1920,
            1080,
            (1, 1),
            Rotation::R0,
            &target(288, 192, Fit::Cover, None),
        )
        .unwrap();
        assert_eq!(
            g.src,
            Rect {
                x: 600,
                y: 0,
                w: 720,
                h: 1080
            }
        );
    }

    #[test]
    fn rotation_maps_the_region_back_to_stored_pixels() {
        // Portrait 720x1280 stored as 1280x720 with a 90° rotation.
        let g = Geometry::plan(
            1280,
            720,
            (1, 1),
            Rotation::R90,
            &target(288, 192, Fit::Cover, None),
        )
        .unwrap();
        assert_eq!((g.display_w, g.display_h), (720, 1280));
        assert_eq!(
            g.src,
            Rect {
                x: 100,
                y: 0,
                w: 1080,
                h: 720
            }
        );
        assert_eq!(
            g.display_src,
            Rect {
                x: 0,
                y: 100,
                w: 720,
                h: 1080
            }
        );
        assert_eq!((g.scaled_w, g.scaled_h), (288, 192));
        assert!(!g.direct());
    }

    #[test]
    fn non_square_pixels_widen_the_picture() {
        // 720x576 with SAR 16:15 shows as 768x576.
        let g = Geometry::plan(
            720,
            576,
            (16, 15),
            Rotation::R0,
            &target(224, 224, Fit::ShortSide, Some(224)),
        )
        .unwrap();
        assert_eq!((g.display_w, g.display_h), (768, 576));
        // 576 display px square -> 540 stored px wide.
        assert_eq!(
            g.src,
            Rect {
                x: 90,
                y: 0,
                w: 540,
                h: 576
            }
        );
    }

    #[test]
    fn odd_sizes_stay_inside_and_even() {
        let g = Geometry::plan(
            321,
            243,
            (1, 1),
            Rotation::R0,
            &target(224, 224, Fit::ShortSide, Some(224)),
        )
        .unwrap();
        assert!(g.src.x.is_multiple_of(2) && g.src.y.is_multiple_of(2));
        assert!(g.src.x + g.src.w <= 321 && g.src.y + g.src.h <= 243);
        assert_eq!(g.src.h, 242);
        assert_eq!(g.src.w, 244);
        // Tiny pictures still give a region.
        let g =
            Geometry::plan(1, 1, (0, 1), Rotation::R0, &target(8, 8, Fit::Cover, None)).unwrap();
        assert_eq!(
            g.src,
            Rect {
                x: 0,
                y: 0,
                w: 1,
                h: 1
            }
        );
    }

    #[test]
    fn contain_pads_and_centres() {
        let g = Geometry::plan(
            1280,
            720,
            (1, 1),
            Rotation::R0,
            &target(224, 224, Fit::Contain, None),
        )
        .unwrap();
        assert_eq!(
            g.src,
            Rect {
                x: 0,
                y: 0,
                w: 1280,
                h: 720
            }
        );
        assert_eq!(
            g.place,
            Rect {
                x: 0,
                y: 49,
                w: 224,
                h: 126
            }
        );
        assert!(!g.direct());
    }

    #[test]
    fn blit_turns_pictures_upright() {
        // A 3x2 stored picture (pixel value = 10*y + x) shown rotated.
        let src: Vec<u8> = (0..2u8)
            .flat_map(|y| (0..3u8).flat_map(move |x| [10 * y + x; 3]))
            .collect();
        let g = |rotation| Geometry {
            stored_w: 3,
            stored_h: 2,
            display_w: 2,
            display_h: 3,
            rotation,
            src: Rect {
                x: 0,
                y: 0,
                w: 3,
                h: 2,
            },
            display_src: Rect {
                x: 0,
                y: 0,
                w: 2,
                h: 3,
            },
            scaled_w: 3,
            scaled_h: 2,
            place: Rect {
                x: 0,
                y: 0,
                w: 2,
                h: 3,
            },
            out_w: 2,
            out_h: 3,
        };
        let pixels = |out: &[u8]| out.chunks(3).map(|p| p[0]).collect::<Vec<_>>();
        let mut out = vec![0u8; 18];
        // Clockwise: the left column (x = 0), bottom to top, becomes the top row.
        g(Rotation::R90).blit(&src, 9, &mut out);
        assert_eq!(pixels(&out), vec![10, 0, 11, 1, 12, 2]);
        g(Rotation::R270).blit(&src, 9, &mut out);
        assert_eq!(pixels(&out), vec![2, 12, 1, 11, 0, 10]);
    }

    #[test]
    fn rotations_round_to_quarter_turns() {
        assert_eq!(Rotation::from_clockwise_degrees(90.0), Rotation::R90);
        assert_eq!(Rotation::from_clockwise_degrees(-90.0), Rotation::R270);
        assert_eq!(Rotation::from_clockwise_degrees(179.6), Rotation::R180);
        assert_eq!(Rotation::from_clockwise_degrees(f64::NAN), Rotation::R0);
    }
}
