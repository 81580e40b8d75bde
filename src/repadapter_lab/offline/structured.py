"""The structured group of the offline suite: scenes drawn in code, in the spirit of VTAB's structured tasks.

Every image is 64x64 uint8, drawn at twice that size with PIL and box-filtered down (anti-aliasing).

- ``dsprites_loc`` / ``dsprites_ori``: one white 2-D shape on black (like dSprites); the label is
  the x-position bin or the orientation bin of the shape.
- ``clevr_count`` / ``clevr_dist``: 3..10 shaded spheres, cubes and cylinders on a floor seen in
  perspective (like CLEVR); the label is the number of objects or the depth bin of the closest one.
- ``object_azi`` / ``object_ele``: a grey toy aeroplane or car, a rigid mesh with flat (Lambert)
  shaded faces, seen by a camera on a sphere around it (like smallNORB); the label is the camera's
  azimuth bin or elevation bin.

The label value is sampled first (balanced over the classes) and the scene is drawn to match it;
continuous quantities are drawn uniformly inside the label's bin.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import NamedTuple, TypeVar

import numpy as np
from PIL import Image, ImageDraw

from repadapter_lab.offline.base import SIZE, Builder, Example, build_by_label

_SUPER = 2  # images are drawn at _SUPER times their size, then box-filtered down
_CANVAS = SIZE * _SUPER

DSPRITES_LOC_CLASSES = 16
DSPRITES_ORI_CLASSES = 16
CLEVR_COUNT_CLASSES = 8
CLEVR_DIST_CLASSES = 6
OBJECT_AZI_CLASSES = 18
OBJECT_ELE_CLASSES = 9

_Render = Callable[[int, np.random.Generator], np.ndarray]


def _build(sizes: Mapping[str, int], seed: int, classes: int, render: _Render) -> dict[str, list[Example]]:
    """`build_by_label` for renders that draw every split alike."""
    return build_by_label(sizes, seed, classes, lambda label, rng, _: render(label, rng))


def _in_bin(rng: np.random.Generator, label: int, num_bins: int, low: float, high: float) -> float:
    """A value drawn uniformly inside bin ``label`` of ``num_bins`` equal bins over ``[low, high)``."""
    return low + (label + rng.random()) * (high - low) / num_bins


def _downsample(image: Image.Image) -> np.ndarray:
    return np.array(image.resize((SIZE, SIZE), Image.Resampling.BOX))


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector, axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------------
# dSprites-like: one white shape on black.


def _normalised(outline: np.ndarray) -> np.ndarray:
    """The polygon moved so that its area centroid is the origin and scaled to radius 1 around it."""
    x, y = outline[:, 0], outline[:, 1]
    next_x, next_y = np.roll(x, -1), np.roll(y, -1)
    cross = x * next_y - next_x * y
    centroid = np.array([((x + next_x) * cross).sum(), ((y + next_y) * cross).sum()]) / (3 * cross.sum())
    centred = outline - centroid
    return centred / np.linalg.norm(centred, axis=1).max()


def _circle(count: int) -> np.ndarray:
    angle = np.linspace(0, 2 * math.pi, count, endpoint=False)
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, -y], axis=1)  # image y points down: lobes up, tip down


# Outlines in image coordinates (y down), pose "0°": the arrow points right, the heart stands upright.
_HEART = _normalised(_heart())
_ARROW = _normalised(
    np.array([(-1, -0.2), (0.2, -0.2), (0.2, -0.5), (1, 0), (0.2, 0.5), (0.2, 0.2), (-1, 0.2)])
)
_SQUARE = _normalised(np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]))
_ELLIPSE = _normalised(_circle(48) * [1.0, 0.55])
_Shapes = tuple[np.ndarray, ...]
_ALL_SHAPES = (_HEART, _SQUARE, _ELLIPSE, _ARROW)
_ORIENTED_SHAPES = (_HEART, _ARROW)  # no rotational symmetry: the angle over 360° is well defined

_SPRITE_RADIUS = (5.0, 10.0)  # distance from the centre to the farthest point of the shape, pixels
_SPRITE_RANGE = (_SPRITE_RADIUS[1] + 1.0, SIZE - _SPRITE_RADIUS[1] - 1.0)  # admissible centre x and y


def _sprite(outline: np.ndarray, x: float, y: float, radius: float, angle: float) -> np.ndarray:
    """The shape on black, centre at (x, y) pixels, turned ``angle`` radians counter-clockwise."""
    cos, sin = math.cos(angle), math.sin(angle)
    turned = outline @ np.array([[cos, -sin], [sin, cos]])  # rows (x cos + y sin, -x sin + y cos)
    points = (turned * radius + [x, y]) * _SUPER
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    ImageDraw.Draw(image).polygon(points.ravel().tolist(), fill=255)
    return _downsample(image)


def _random_sprite(
    rng: np.random.Generator, shapes: _Shapes, x: float | None, turn: float | None
) -> np.ndarray:
    outline = shapes[int(rng.integers(len(shapes)))]
    x = rng.uniform(*_SPRITE_RANGE) if x is None else x
    y = rng.uniform(*_SPRITE_RANGE)
    radius = rng.uniform(*_SPRITE_RADIUS)
    turn = rng.uniform(0, 2 * math.pi) if turn is None else turn
    return _sprite(outline, x, y, radius, turn)


def dsprites_loc(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """A heart, square, ellipse or arrow on black at random scale, angle and y (grey 64x64).

    Label: bin of the x position of the shape's centre, 16 equal bins from left to right over the
    range where the shape always fits.
    """

    def render(label: int, rng: np.random.Generator) -> np.ndarray:
        x = _in_bin(rng, label, DSPRITES_LOC_CLASSES, *_SPRITE_RANGE)
        return _random_sprite(rng, _ALL_SHAPES, x, None)

    return _build(sizes, seed, DSPRITES_LOC_CLASSES, render)


def dsprites_ori(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """A heart or arrow on black at random position and scale (grey 64x64).

    Label: bin of the shape's counter-clockwise rotation from its upright pose (heart tip down,
    arrow pointing right), 16 bins of 22.5° over 360°.
    """

    def render(label: int, rng: np.random.Generator) -> np.ndarray:
        angle = _in_bin(rng, label, DSPRITES_ORI_CLASSES, 0.0, 2 * math.pi)
        return _random_sprite(rng, _ORIENTED_SHAPES, None, angle)

    return _build(sizes, seed, DSPRITES_ORI_CLASSES, render)


# --------------------------------------------------------------------------------------------------
# CLEVR-like: objects on a floor. World: x right, y up, z depth away from the camera, which sits at
# (0, _CAM_HEIGHT, 0) looking along z; the horizon is the image row _HORIZON.

_SPHERE, _CUBE, _CYLINDER = 0, 1, 2
_PRISM_SIDES = {_CUBE: 4, _CYLINDER: 24}
_FOOTPRINT_PER_HALF = np.array([1.0, math.sqrt(2), 1.0])  # radius on the floor / half the height, by kind
# CLEVR's palette without its grey, so that objects stand out from the grey floor by their colour
_CLEVR_COLOURS = np.array(
    [
        (173, 35, 35),  # red
        (42, 75, 215),  # blue
        (29, 105, 20),  # green
        (129, 74, 25),  # brown
        (129, 38, 192),  # purple
        (41, 208, 208),  # cyan
        (255, 238, 51),  # yellow
    ],
    dtype=float,
)
_DEPTH = (5.0, 12.5)  # depth range of object centres
_CLOSEST = (5.0, 10.0)  # range of the closest object's depth, binned by clevr_dist
_HALF_SIZE = (0.3, 0.65)  # object height is twice this; it is also the radius of spheres and cylinders
_CAM_HEIGHT = 2.5
_HORIZON = 0.22 * _CANVAS
_MAX_FOOTPRINT = _HALF_SIZE[1] * float(_FOOTPRINT_PER_HALF.max())
# the nearest, largest object still ends inside the image
_FOCAL = (_CANVAS - 3 - _HORIZON) * (_DEPTH[0] - _MAX_FOOTPRINT) / _CAM_HEIGHT
_CLEVR_LIGHT = _unit(np.array([-0.5, 0.8, -0.35]))  # towards the light: left, above, camera side
_AMBIENT = 0.35
_MAX_HIDDEN = 0.4  # most of an object's screen box that nearer objects' boxes may cover, summed
_CLEVR_COUNT = (3, 10)


_Coord = TypeVar("_Coord", float, np.ndarray)


class _Thing(NamedTuple):
    kind: int
    x: float
    z: float
    half: float
    yaw: float
    colour: np.ndarray
    shiny: bool

    @property
    def footprint(self) -> float:
        """Radius of the circle the object covers on the floor."""
        return float(_FOOTPRINT_PER_HALF[self.kind]) * self.half


def _project(x: _Coord, y: _Coord, z: _Coord) -> tuple[_Coord, _Coord]:
    """Canvas (u, v) of world points (floats or arrays)."""
    return _CANVAS / 2 + _FOCAL * x / z, _HORIZON + _FOCAL * (_CAM_HEIGHT - y) / z


def _screen_boxes(x: np.ndarray, z: np.ndarray, half: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Boxes (left, top, right, bottom), in canvas pixels, that hold the drawn objects; shape (N, 4)."""
    near, far = z - footprint, z + footprint
    left = np.minimum((x - footprint) / near, (x - footprint) / far)
    right = np.maximum((x + footprint) / near, (x + footprint) / far)
    top = _HORIZON + _FOCAL * (_CAM_HEIGHT - 2 * half) / far
    bottom = _HORIZON + _FOCAL * _CAM_HEIGHT / near
    return np.stack([_CANVAS / 2 + _FOCAL * left, top, _CANVAS / 2 + _FOCAL * right, bottom], axis=-1)


def _clevr_scene(rng: np.random.Generator, count: int, closest: tuple[float, float] | None) -> list[_Thing]:
    """``count`` objects of random kind, size, colour and position, placed one by one.

    Candidates are drawn in batches; the first that neither touches a placed object on the floor nor
    leaves some object's screen box more than _MAX_HIDDEN covered by nearer ones is kept. With
    ``closest``, the first object's depth is drawn in that range and the others' between it and the
    far end, so it is the closest one; otherwise all depths are uniform over _DEPTH.
    """
    batch = 32
    for _ in range(1000):
        placed = np.empty((count, 5))  # kind, x, z, half, footprint
        boxes = np.empty((count, 4))  # screen boxes
        hidden = np.zeros(count)  # area of each box covered by nearer objects' boxes
        limit = np.empty(count)  # the most of it that may be covered
        n = 0
        for _ in range(8 * count):
            if closest is None:
                depths = _DEPTH
            else:
                depths = closest if n == 0 else (placed[0, 2], _DEPTH[1])
            z = rng.uniform(*depths, size=batch)
            kind = rng.integers(3, size=batch)
            half = rng.uniform(*_HALF_SIZE, size=batch)
            footprint = _FOOTPRINT_PER_HALF[kind] * half
            reach = (_CANVAS / 2 - 2) * (z - footprint) / _FOCAL - footprint  # inside the image sideways
            x = rng.uniform(-reach, reach)
            box = _screen_boxes(x, z, half, footprint)
            area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
            gap = np.hypot(x[:, None] - placed[:n, 1], z[:, None] - placed[:n, 2])
            low = np.maximum(box[:, None, :2], boxes[:n, :2])
            high = np.minimum(box[:, None, 2:], boxes[:n, 2:])
            covered = np.prod(np.clip(high - low, 0, None), axis=2)  # (batch, n)
            nearer = placed[:n, 2] < z[:, None]
            own = (covered * nearer).sum(axis=1)
            others = hidden[:n] + covered * ~nearer
            apart = np.all(gap >= placed[:n, 4] + footprint[:, None] + 0.05, axis=1)
            good = apart & (own <= _MAX_HIDDEN * area) & np.all(others <= limit[:n], axis=1)
            if not good.any():
                continue
            i = int(np.argmax(good))
            hidden[:n], hidden[n], limit[n] = others[i], own[i], _MAX_HIDDEN * area[i]
            placed[n], boxes[n] = (kind[i], x[i], z[i], half[i], footprint[i]), box[i]
            n += 1
            if n == count:
                colours = _CLEVR_COLOURS[rng.integers(len(_CLEVR_COLOURS), size=count)]
                colours *= rng.uniform(0.85, 1.1, size=(count, 1))
                yaws, shiny = rng.uniform(0, 2 * math.pi, size=count), rng.random(count) < 0.5
                return [
                    _Thing(int(k), float(x), float(z), float(h), float(yaw), colour, bool(s))
                    for (k, x, z, h, _), yaw, colour, s in zip(placed, yaws, colours, shiny, strict=True)
                ]
    raise RuntimeError(f"could not place {count} objects without overlap")  # pragma: no cover


@functools.cache
def _clevr_backgrounds() -> tuple[Image.Image, Image.Image]:
    """The empty scene (a darker wall above the horizon, a lit floor below) and its shadowed version."""
    row = np.arange(_CANVAS, dtype=float)[:, None]
    floor = 118 + 62 * np.clip((row - _HORIZON) / (_CANVAS - _HORIZON), 0, 1)
    wall = 78 + 12 * row / _HORIZON
    grey = np.where(row < _HORIZON, wall, floor) * np.array([1.0, 1.0, 1.03])
    lit = np.broadcast_to(grey[:, None, :], (_CANVAS, _CANVAS, 3))
    shadowed = lit * 0.62
    return Image.fromarray(lit.round().astype(np.uint8)), Image.fromarray(shadowed.round().astype(np.uint8))


def _shades(colour: np.ndarray, light: np.ndarray) -> list[tuple[int, int, int]]:
    """``colour`` times each of the ``light`` levels, as PIL fills."""
    rgb = np.clip(np.multiply.outer(light, colour), 0, 255).round().astype(int)
    return [(r, g, b) for r, g, b in rgb.tolist()]


def _draw_prism(draw: ImageDraw.ImageDraw, thing: _Thing) -> None:
    """A cube (4 sides) or cylinder (24 sides): the sides facing the camera and the top, Lambert shaded."""
    sides = _PRISM_SIDES[thing.kind]
    angle = thing.yaw + 2 * math.pi * np.arange(sides) / sides
    x = thing.x + thing.footprint * np.cos(angle)
    z = thing.z + thing.footprint * np.sin(angle)
    bottom_u, bottom_v = _project(x, np.zeros_like(x), z)
    top_u, top_v = _project(x, np.full_like(x, 2 * thing.half), z)
    middle = angle + math.pi / sides
    normal_x, normal_z = np.cos(middle), np.sin(middle)
    # side i runs from corner i to i + 1; it faces the camera if its normal points back towards x = z = 0
    visible = np.flatnonzero(normal_x * (x + np.roll(x, -1)) + normal_z * (z + np.roll(z, -1)) < 0)
    ahead = (visible + 1) % sides
    corners = [(bottom_u, bottom_v, visible), (bottom_u, bottom_v, ahead), (top_u, top_v, ahead)]
    corners.append((top_u, top_v, visible))
    quads = np.stack([coord[at] for u, v, at in corners for coord in (u, v)], axis=1)
    lambert = normal_x[visible] * _CLEVR_LIGHT[0] + normal_z[visible] * _CLEVR_LIGHT[2]
    light = _AMBIENT + (1 - _AMBIENT) * np.clip(np.append(lambert, _CLEVR_LIGHT[1]), 0, None)
    fills = _shades(thing.colour, light)
    for quad, fill in zip(quads.tolist(), fills, strict=False):
        draw.polygon(quad, fill=fill)
    draw.polygon(np.stack([top_u, top_v], axis=1).ravel().tolist(), fill=fills[-1])


_SPHERE_STEPS = np.linspace(0, 1, 7)
_SPHERE_LIGHT = _AMBIENT + (1 - _AMBIENT) * _SPHERE_STEPS**0.7


def _draw_sphere(draw: ImageDraw.ImageDraw, thing: _Thing) -> None:
    """A disc with nested discs brightening towards the lit side, and a highlight if shiny."""
    u, v = _project(thing.x, thing.half, thing.z)
    radius = _FOCAL * thing.half / thing.z
    lit_u, lit_v = _CLEVR_LIGHT[0] * 0.45 * radius, -_CLEVR_LIGHT[1] * 0.45 * radius
    for t, fill in zip(_SPHERE_STEPS.tolist(), _shades(thing.colour, _SPHERE_LIGHT), strict=True):
        cu, cv, r = u + lit_u * t, v + lit_v * t, radius * (1 - 0.8 * t)
        draw.ellipse((cu - r, cv - r, cu + r, cv + r), fill=fill)
    if thing.shiny:
        cu, cv, r = u + lit_u * 1.1, v + lit_v * 1.1, radius * 0.16
        draw.ellipse((cu - r, cv - r, cu + r, cv + r), fill=(245, 245, 245))


def _clevr_image(things: list[_Thing]) -> np.ndarray:
    """The scene as RGB 64x64: soft floor shadows first, then the objects from far to near."""
    lit, shadowed = _clevr_backgrounds()
    mask = Image.new("L", (_CANVAS, _CANVAS), 0)
    shadows = ImageDraw.Draw(mask)
    for thing in things:
        r = 1.15 * thing.footprint
        x, z = thing.x + 0.5 * r, thing.z + 0.4 * r  # the light is to the left and in front
        u, v = _project(x, 0.0, z)
        du, dv = _FOCAL * r / z, _FOCAL * _CAM_HEIGHT * r / z**2
        shadows.ellipse((u - du, v - dv, u + du, v + dv), fill=150)
    image = Image.composite(shadowed, lit, mask)
    draw = ImageDraw.Draw(image)
    for thing in sorted(things, key=lambda t: -t.z):
        if thing.kind == _SPHERE:
            _draw_sphere(draw, thing)
        else:
            _draw_prism(draw, thing)
    return _downsample(image)


def clevr_count(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """3 to 10 shaded spheres, cubes and cylinders on a floor in perspective (RGB 64x64).

    Label: number of objects minus 3.
    """

    def render(label: int, rng: np.random.Generator) -> np.ndarray:
        return _clevr_image(_clevr_scene(rng, label + _CLEVR_COUNT[0], None))

    return _build(sizes, seed, CLEVR_COUNT_CLASSES, render)


def clevr_dist(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """3 to 10 shaded spheres, cubes and cylinders on a floor in perspective (RGB 64x64).

    Label: depth bin of the closest object's centre, 6 equal bins over its range (0 = nearest); the
    other objects lie between it and the far end of the scene.
    """

    def render(label: int, rng: np.random.Generator) -> np.ndarray:
        count = int(rng.integers(_CLEVR_COUNT[0], _CLEVR_COUNT[1] + 1))
        width = (_CLOSEST[1] - _CLOSEST[0]) / CLEVR_DIST_CLASSES
        low = _CLOSEST[0] + label * width
        return _clevr_image(_clevr_scene(rng, count, (low, low + width)))

    return _build(sizes, seed, CLEVR_DIST_CLASSES, render)


# --------------------------------------------------------------------------------------------------
# smallNORB-like: a grey rigid toy on a plain background, seen by a camera on a sphere around it.
# Object frame: x towards the front (nose), y up, z to one side.

_Span = tuple[float, float]
# Corner i of a hexahedron sits at the low (bit a of i is 0) or high end along axis a; its six faces:
_HEXA_FACES = np.array([[0, 2, 6, 4], [1, 3, 7, 5], [0, 1, 5, 4], [2, 3, 7, 6], [0, 1, 3, 2], [4, 5, 7, 6]])


def _loft(axis: int, ends: _Span, sections: tuple[tuple[_Span, _Span], tuple[_Span, _Span]]) -> np.ndarray:
    """The quads (6, 4, 3) of a solid spanning ``ends`` along ``axis``, whose cross-section at each end
    is a rectangle: ``sections[k]`` gives its span along each of the two other axes, in x, y, z order."""
    others = [a for a in range(3) if a != axis]
    corners = np.empty((8, 3))
    for i in range(8):
        bit = [(i >> a) & 1 for a in range(3)]
        section = sections[bit[axis]]
        corners[i, axis] = ends[bit[axis]]
        for span, a in zip(section, others, strict=True):
            corners[i, a] = span[bit[a]]
    return corners[_HEXA_FACES]


def _box(x: _Span, y: _Span, z: _Span) -> np.ndarray:
    return _loft(0, x, ((y, z), (y, z)))


class _Mesh(NamedTuple):
    quads: np.ndarray  # (F, 4, 3) corners of each face
    normals: np.ndarray  # (F, 3) outward unit normals
    centres: np.ndarray  # (F, 3)


def _mesh(parts: list[np.ndarray]) -> _Mesh:
    """Faces of convex parts, without degenerate ones, centred on the origin and scaled to radius 1."""
    quads, normals = [], []
    for part in parts:
        middle = part.reshape(-1, 3).mean(axis=0)
        for quad in part:
            normal = np.cross(quad[2] - quad[0], quad[3] - quad[1])
            length = float(np.linalg.norm(normal))
            if length > 1e-9:
                outwards = normal @ (quad.mean(axis=0) - middle) > 0
                quads.append(quad)
                normals.append(normal / length if outwards else -normal / length)
    points = np.array(quads)
    points -= (points.reshape(-1, 3).max(axis=0) + points.reshape(-1, 3).min(axis=0)) / 2
    points /= np.linalg.norm(points, axis=-1).max()
    return _Mesh(points, np.array(normals), points.mean(axis=1))


def _aeroplane() -> _Mesh:
    """Swept wings, tail fin at the back and an engine under the left wing only."""
    tip, root, tail, body = (-0.45, -0.2), (-0.25, 0.25), (-0.98, -0.75), ((-0.15, 0.15), (-0.14, 0.14))
    return _mesh(
        [
            _loft(0, (-1.0, 0.6), (((-0.02, 0.1), (-0.05, 0.05)), body)),  # fuselage
            _loft(0, (0.6, 1.0), (body, ((-0.05, 0.03), (-0.03, 0.03)))),  # nose
            _loft(0, (0.15, 0.55), (((0.1, 0.18), (-0.07, 0.07)), ((0.1, 0.25), (-0.1, 0.1)))),  # cockpit
            _loft(2, (0.14, 1.0), ((root, (-0.04, 0.03)), (tip, (-0.02, 0.02)))),  # right wing
            _loft(2, (-1.0, -0.14), ((tip, (-0.02, 0.02)), (root, (-0.04, 0.03)))),  # left wing
            _loft(2, (0.05, 0.4), ((tail, (0.03, 0.06)), ((-1.0, -0.88), (0.04, 0.06)))),  # tailplane
            _loft(2, (-0.4, -0.05), (((-1.0, -0.88), (0.04, 0.06)), (tail, (0.03, 0.06)))),
            _loft(1, (0.08, 0.5), (((-1.0, -0.62), (-0.025, 0.025)), ((-1.05, -0.9), (-0.015, 0.015)))),
            _box((-0.2, 0.3), (-0.17, -0.04), (-0.62, -0.45)),  # engine, left only
        ]
    )


def _car() -> _Mesh:
    """Long bonnet, cabin towards the back, rear spoiler, and a roof box and side tank on the left only."""
    wheel_y, axles, sides = (-0.15, 0.12), ((0.45, 0.8), (-0.8, -0.45)), ((0.45, 0.55), (-0.55, -0.45))
    return _mesh(
        [
            _box((-1.0, 1.0), (0.0, 0.32), (-0.45, 0.45)),  # body
            _loft(1, (0.32, 0.62), (((-0.7, 0.25), (-0.4, 0.4)), ((-0.55, -0.05), (-0.34, 0.34)))),  # cabin
            *[_box(x, wheel_y, z) for x in axles for z in sides],  # wheels
            _box((-1.0, -0.82), (0.45, 0.5), (-0.42, 0.42)),  # spoiler and its posts
            _box((-0.95, -0.88), (0.32, 0.45), (-0.32, -0.25)),
            _box((-0.95, -0.88), (0.32, 0.45), (0.25, 0.32)),
            _box((-0.5, -0.1), (0.62, 0.72), (-0.3, 0.0)),  # roof box, left
            _box((-0.35, 0.1), (0.08, 0.24), (-0.52, -0.45)),  # side tank, left
        ]
    )


_MESHES = (_aeroplane(), _car())
_ELEVATION = (0.0, math.radians(60))
_CAMERA_DISTANCE = 6.0
_OBJECT_FOCAL = 0.38 * _CANVAS * (_CAMERA_DISTANCE - 1)  # radius 1 at the nearest spans 0.38 of the canvas


def _object_image(mesh: _Mesh, azimuth: float, elevation: float, rng: np.random.Generator) -> np.ndarray:
    """The mesh seen from ``azimuth`` (0 = facing the front, turning towards +z) and ``elevation``
    (0 = level, radians), with random light, size, position and grey levels; grey 64x64.

    Faces turned away are dropped, the rest are Lambert shaded and painted from far to near."""
    scale, shift = rng.uniform(0.9, 1.1), rng.uniform(-0.05, 0.05, size=2) * _CANVAS
    ambient, albedo, background = rng.uniform(0.3, 0.45), rng.uniform(170, 235), rng.uniform(5, 45)
    light_in_view = _unit(np.array([rng.uniform(-0.9, 0.3), rng.uniform(0.2, 1.0), 1.0]))  # right, up, back

    level, height = math.cos(elevation), math.sin(elevation)
    camera = _CAMERA_DISTANCE * np.array([level * math.cos(azimuth), height, level * math.sin(azimuth)])
    forward = -camera / _CAMERA_DISTANCE
    right = _unit(np.cross(forward, [0.0, 1.0, 0.0]))
    up = np.cross(right, forward)
    light = light_in_view @ np.stack([right, up, -forward])

    relative = mesh.quads - camera
    depth = relative @ forward
    zoom = _OBJECT_FOCAL * scale / depth
    u = _CANVAS / 2 + shift[0] + (relative @ right) * zoom
    v = _CANVAS / 2 + shift[1] - (relative @ up) * zoom
    grey = albedo * (ambient + (1 - ambient) * np.clip(mesh.normals @ light, 0, None))
    facing = ((camera - mesh.centres) * mesh.normals).sum(axis=1) > 0

    image = Image.new("L", (_CANVAS, _CANVAS), round(background))
    draw = ImageDraw.Draw(image)
    for i in np.argsort(-depth.mean(axis=1), kind="stable"):
        if facing[i]:
            draw.polygon(np.stack([u[i], v[i]], axis=1).ravel().tolist(), fill=round(grey[i]))
    return _downsample(image)


def _random_object(rng: np.random.Generator, azimuth: float | None, elevation: float | None) -> np.ndarray:
    mesh = _MESHES[int(rng.integers(len(_MESHES)))]
    azimuth = rng.uniform(0, 2 * math.pi) if azimuth is None else azimuth
    elevation = rng.uniform(*_ELEVATION) if elevation is None else elevation
    return _object_image(mesh, azimuth, elevation, rng)


def object_azi(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """A grey toy aeroplane or car seen from a random elevation in [0°, 60°] (grey 64x64).

    Label: bin of the camera's azimuth around the object, 18 bins of 20° over 360° (0 = from the front).
    """

    def render(label: int, rng: np.random.Generator) -> np.ndarray:
        return _random_object(rng, _in_bin(rng, label, OBJECT_AZI_CLASSES, 0.0, 2 * math.pi), None)

    return _build(sizes, seed, OBJECT_AZI_CLASSES, render)


def object_ele(sizes: Mapping[str, int], seed: int) -> dict[str, list[Example]]:
    """A grey toy aeroplane or car seen from a random azimuth (grey 64x64).

    Label: bin of the camera's elevation above the object's ground plane, 9 bins over [0°, 60°].
    """

    def render(label: int, rng: np.random.Generator) -> np.ndarray:
        return _random_object(rng, None, _in_bin(rng, label, OBJECT_ELE_CLASSES, *_ELEVATION))

    return _build(sizes, seed, OBJECT_ELE_CLASSES, render)


STRUCTURED: dict[str, tuple[Builder, int, str]] = {
    "dsprites_loc": (dsprites_loc, DSPRITES_LOC_CLASSES, "x position of a 2-D shape on black, 16 bins"),
    "dsprites_ori": (dsprites_ori, DSPRITES_ORI_CLASSES, "rotation of a 2-D shape on black, 16 bins"),
    "clevr_count": (clevr_count, CLEVR_COUNT_CLASSES, "number of objects (3-10) in a CLEVR-like scene"),
    "clevr_dist": (clevr_dist, CLEVR_DIST_CLASSES, "depth bin of the closest object in a CLEVR-like scene"),
    "object_azi": (object_azi, OBJECT_AZI_CLASSES, "camera azimuth around a grey toy, 18 bins of 20 deg"),
    "object_ele": (object_ele, OBJECT_ELE_CLASSES, "camera elevation over a grey toy, 9 bins over 0-60 deg"),
}
"""Task name -> (builder, number of classes, one-line description)."""
