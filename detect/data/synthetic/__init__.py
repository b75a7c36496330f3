"""A small synthetic COCO-format dataset: shapes and stick figures on cluttered backgrounds.

Every image is drawn with OpenCV from its own random stream ``default_rng([seed, split, index])``,
so a seed gives byte-identical JSON and JPEG files, and any image can be regenerated alone.

Categories (non-contiguous ids, so the id <-> label mapping is exercised):
``person`` (1, a stick figure with 13 keypoints), ``circle`` (3), ``box`` (7, a rotated
rectangle) and ``triangle`` (10). Colours come from one distribution for all of them: the class is
in the shape, not the colour.

Conventions (see ``data/README.md``):

* Objects are drawn one after another, so later objects occlude earlier ones. An annotation keeps
  the full tight box of everything its object drew inside the image (occluded parts included;
  parts outside the image are cut off, as in COCO). No object is left less than 35 % visible.
* ``area`` is the box area ``w * h``; it sets the COCO small/medium/large range and the OKS scale.
* ``segmentation`` is the exact mask of the pixels the object shows in the image: everything it
  drew minus what later objects cover (pixels outside the image are never drawn), as a compressed
  COCO RLE (``counts`` a str). The masks of one image are disjoint; the mask's own tight box is the
  box when nothing covers the object, and smaller when a later object hides an edge. The mask is
  the pixels before the final blur and grain. On small persons (head radius under 2.5 px) a
  face's eyes may paint 1-4 pixels just outside the head; those stay outside the mask (47 of 1589
  objects in the default set, 116 pixels).
* Keypoint visibility: 2 visible, 1 inside the image but covered by a later-drawn object,
  0 outside the image (then x = y = 0).
* A keypoint drawn at pixel (i, j) is annotated at (i + 0.5, j + 0.5): pixel i covers [i, i + 1)
  in COCO's continuous coordinates, like the box edges.
* ``left_*`` is the figure's own left. A figure facing the camera has its left shoulder and hip
  on the image right; a figure seen from behind on the image left. A horizontal flip with swapped
  left/right labels keeps this rule true. Which way a figure faces is visible at 320 px, as it is
  on real people: from the front, a light face with eyes and a mouth and a shirt front (the torso
  filled in a second colour); from behind, dark hair and a plain torso in the body's colour.
* As in COCO ("crowds and small objects will have num_keypoints = 0"), persons whose box area is
  under 32^2 carry no keypoint labels (all ``v = 0``); COCO's keypoint evaluation ignores them.
* 1 image in 12 has no object. In the train split 1 image in 20 holds a cluster of tiny circles
  annotated as one ``iscrowd = 1`` box of category circle, its mask the union of the discs'
  visible pixels (val has none).

Files: `categories.py` (ids, keypoint names, skeleton), `background.py` (the backdrop, and the
colour distribution every drawing shares), `shapes.py` (geometry in unit size: polygons, circles,
stick-figure poses), `render.py` (a placed shape's pixels and paint), `annotation.py` (a drawn
object's COCO fields, its mask included), `scene.py` (objects placed and drawn into one image:
`make_image`) and `write.py` (splits of JPEG files and COCO JSON: `generate`).
"""
