// splatdistill view: several Gaussian-splat models drawn by Spark from one shared camera.
//
// Camera convention (as in the Python package): OpenCV, x right, y down, z forward;
// `world_to_camera` is a 4x4 rigid transform and intrinsics are pinhole fx, fy, cx, cy in pixels
// of a width x height image. three.js cameras look down -z with y up, so the three.js camera
// frame is the OpenCV frame with y and z negated. The projection matrix is built from the
// intrinsics (principal point included), and every panel keeps the camera's aspect ratio.
//
// Test hook: window.splatdistill (ready, error, info, frames(), framesSinceCamera(), idleMs(),
// setCamera(cam), getCamera(), target()).

import * as THREE from "three";
import { SparkRenderer, SplatMesh } from "@sparkjsdev/spark";

const hook = {
  ready: false, error: null, panels: [], layout: "side", mode: "orbit",
  frames: () => hook.panels.map((p) => p.frames),
  framesSinceCamera: () => hook.panels.map((p) => p.frames - p.framesAtCamera),
  idleMs: () => performance.now() - lastDraw,
  setCamera: (c) => { setFromCamera(c); return true; },
  getCamera: () => currentCameraJson(),
  target: () => [view.target.x, view.target.y, view.target.z],
};
window.splatdistill = hook;

let info = null;
let lastDraw = performance.now();
const panelsEl = document.getElementById("panels");
const statusEl = document.getElementById("status");

// ---- the shared camera -------------------------------------------------------------------
const view = {
  pos: new THREE.Vector3(),
  right: new THREE.Vector3(1, 0, 0), down: new THREE.Vector3(0, 1, 0), fwd: new THREE.Vector3(0, 0, 1),
  target: new THREE.Vector3(),
  // intrinsics normalised by the image size (so they apply to a canvas of any size)
  fxN: 1, fyN: 1, cxN: 0.5, cyN: 0.5, aspect: 4 / 3, name: "",
  up: new THREE.Vector3(0, 0, 1),
};

function setFromCamera(c) {
  const m = c.world_to_camera;
  // rows of R are the camera axes in world coordinates
  view.right.set(m[0][0], m[0][1], m[0][2]);
  view.down.set(m[1][0], m[1][1], m[1][2]);
  view.fwd.set(m[2][0], m[2][1], m[2][2]);
  const t = new THREE.Vector3(m[0][3], m[1][3], m[2][3]);
  // centre = -R^T t
  view.pos.set(0, 0, 0)
    .addScaledVector(view.right, -t.x).addScaledVector(view.down, -t.y).addScaledVector(view.fwd, -t.z);
  view.fxN = c.fx / c.width; view.fyN = c.fy / c.height;
  view.cxN = c.cx / c.width; view.cyN = c.cy / c.height;
  const newAspect = c.width / c.height;
  const aspectChanged = Math.abs(newAspect - view.aspect) > 1e-6;
  view.aspect = newAspect;
  view.name = c.name || "";
  // orbit about the point on the view axis nearest to the scene centre
  const center = new THREE.Vector3(...info.center);
  const d = Math.max(center.clone().sub(view.pos).dot(view.fwd), 0.05 * info.radius);
  view.target.copy(view.pos).addScaledVector(view.fwd, d);
  for (const p of hook.panels) p.framesAtCamera = p.frames;
  if (aspectChanged) layout();
  showPhoto(c);
  requestDraw();
}

function currentCameraJson() {
  const r = view.right, d = view.down, f = view.fwd, p = view.pos;
  const row = (a) => [a.x, a.y, a.z, -a.dot(p)];
  const s = hook.panels.length ? hook.panels[0].canvas : null;
  const w = s ? s.width : Math.round(720 * view.aspect), h = s ? s.height : 720;
  return {
    world_to_camera: [row(r), row(d), row(f), [0, 0, 0, 1]],
    fx: view.fxN * w, fy: view.fyN * h, cx: view.cxN * w, cy: view.cyN * h, width: w, height: h,
    name: view.name,
  };
}

function applyCamera(camera, w, h) {
  // three.js camera-to-world: columns right, up (= -down), back (= -forward)
  const m = new THREE.Matrix4().makeBasis(view.right, view.down.clone().negate(), view.fwd.clone().negate());
  m.setPosition(view.pos);
  camera.matrixAutoUpdate = false;
  camera.matrix.copy(m);
  camera.matrix.decompose(camera.position, camera.quaternion, camera.scale);
  camera.updateMatrixWorld(true);
  const near = Math.max(1e-4, 0.002 * info.radius), far = 1000 * info.radius;
  const fx = view.fxN * w, fy = view.fyN * h, cx = view.cxN * w, cy = view.cyN * h;
  camera.near = near; camera.far = far;
  camera.aspect = w / h;
  camera.fov = 2 * Math.atan(0.5 * h / fy) * 180 / Math.PI;
  camera.projectionMatrix.set(
    2 * fx / w, 0, 1 - 2 * cx / w, 0,
    0, 2 * fy / h, 2 * cy / h - 1, 0,
    0, 0, -(far + near) / (far - near), -2 * far * near / (far - near),
    0, 0, -1, 0);
  camera.projectionMatrixInverse.copy(camera.projectionMatrix).invert();
}

// ---- panels ------------------------------------------------------------------------------
function fmtBytes(b) {
  if (b >= 1e9) return (b / 1e9).toFixed(2) + " GB";
  if (b >= 1e6) return (b / 1e6).toFixed(2) + " MB";
  if (b >= 1e3) return (b / 1e3).toFixed(1) + " kB";
  return b + " B";
}

function caption(el, name, meta) {
  el.innerHTML = "";
  const n = document.createElement("div"); n.className = "name"; n.textContent = name;
  const m = document.createElement("div"); m.className = "meta"; m.textContent = meta;
  el.append(n, m);
}

function makePanel(model, bg) {
  const div = document.createElement("div");
  div.className = "panel";
  div.dataset.index = model.index;
  const canvas = document.createElement("canvas");
  canvas.tabIndex = 0;
  const cap = document.createElement("div");
  cap.className = "caption";
  const meta = `${model.num_gaussians.toLocaleString("en-US")} Gaussians · ${fmtBytes(model.bytes)} · ` +
    `${model.format.toUpperCase()} · SH ${model.sh_degree}`;
  caption(cap, `${model.index + 1}. ${model.name}`, meta);
  div.append(canvas, cap);
  panelsEl.append(div);

  const renderer = new THREE.WebGLRenderer({ canvas, antialias: false, preserveDrawingBuffer: true });
  renderer.setPixelRatio(1);
  renderer.setClearColor(new THREE.Color().setRGB(bg[0], bg[1], bg[2], THREE.SRGBColorSpace), 1);
  const scene = new THREE.Scene();
  const camera = new THREE.PerspectiveCamera();
  const panel = { model, div, canvas, cap, renderer, scene, camera, frames: 0, framesAtCamera: 0,
                  loaded: false, dirty: true, error: null };
  // Trained without the anti-aliasing filter: add 0.3 px² to the 2D covariance (3DGS); with it,
  // the Mip-Splatting-style blur with opacity compensation (as gsplat's "antialiased" mode).
  const aa = !!model.antialiased;
  const spark = new SparkRenderer({
    renderer, onDirty: () => { panel.dirty = true; requestDraw(); },
    preBlurAmount: aa ? 0.0 : 0.3, blurAmount: aa ? 0.3 : 0.0,
    maxStdDev: 3.0, minAlpha: 1.0 / 255.0, sortRadial: false,
  });
  scene.add(spark);
  panel.spark = spark;
  if (model.num_gaussians > 0) {
    fetch(model.url).then((r) => {
      if (!r.ok) throw new Error(`HTTP ${r.status} for ${model.url}`);
      return r.arrayBuffer();
    }).then((buf) => {
      const mesh = new SplatMesh({ fileBytes: new Uint8Array(buf), fileType: "ply", fileName: "model.ply",
                                   extSplats: true });
      panel.mesh = mesh;
      scene.add(mesh);
      return mesh.initialized;
    }).then(() => { panel.loaded = true; panel.dirty = true; checkReady(); requestDraw(); })
      .catch((e) => { panel.error = String(e); div.classList.add("error"); caption(cap, model.name, "error: " + e);
                      hook.error = hook.error || String(e); });
  } else {
    panel.loaded = true;
  }
  return panel;
}

let photoPanel = null;
function makePhotoPanel() {
  const div = document.createElement("div");
  div.className = "panel photo";
  const img = document.createElement("img");
  img.alt = "ground truth";
  const cap = document.createElement("div");
  cap.className = "caption";
  div.append(img, cap);
  panelsEl.append(div);
  photoPanel = { div, img, cap, current: null };
  div.hidden = true;
}

function showPhoto(c) {
  if (!photoPanel) return;
  const on = document.getElementById("show-photo").checked;
  if (c && c.split !== undefined && c.index !== undefined) {
    photoPanel.current = c;
    photoPanel.img.src = `/photo/${c.split}/${c.index}.png`;
    caption(photoPanel.cap, "ground truth", `${c.split} ${c.index}: ${c.name}`);
    const sel = document.getElementById("cameras");
    sel.value = `${c.split}/${c.index}`;
  } else if (c) {
    photoPanel.current = null;  // the camera moved away from the dataset's cameras
  }
  const visible = on && photoPanel.current !== null;
  if (photoPanel.div.hidden === visible) { photoPanel.div.hidden = !visible; layout(); }
}

let single = 0;  // the model shown alone in "one at a time" layout
function layout() {
  const header = document.querySelector("header");
  panelsEl.style.top = header.offsetHeight + "px";
  const shown = [];
  hook.panels.forEach((p, i) => {
    const vis = hook.layout === "side" || i === single;
    p.div.hidden = !vis;
    if (vis) shown.push(p);
  });
  const photoOn = photoPanel && !photoPanel.div.hidden;
  const n = shown.length + (photoOn ? 1 : 0);
  const gap = 6, capH = 40;
  const W = panelsEl.clientWidth - 2 * gap - gap * (n - 1), H = panelsEl.clientHeight - 2 * gap - capH;
  let w = Math.floor(W / n), h = Math.floor(w / view.aspect);
  if (h > H) { h = H; w = Math.floor(h * view.aspect); }
  w = Math.max(w, 16); h = Math.max(h, 16);
  // whole-pixel offsets, so that a screenshot of a canvas is its pixels, not a resampling
  panelsEl.style.paddingLeft = Math.max(0, Math.floor((panelsEl.clientWidth - n * w - gap * (n - 1)) / 2)) + "px";
  panelsEl.style.paddingTop = Math.max(0, Math.floor((panelsEl.clientHeight - h - capH) / 2)) + "px";
  for (const p of shown) {
    p.renderer.setSize(w, h, true);
    p.cap.style.width = w + "px";
    p.dirty = true;
  }
  if (photoOn) {
    photoPanel.img.style.width = w + "px"; photoPanel.img.style.height = h + "px";
    photoPanel.cap.style.width = w + "px";
  }
  requestDraw();
}

// ---- drawing -----------------------------------------------------------------------------
let drawPending = false;
let settleUntil = 0;
function requestDraw() {
  settleUntil = performance.now() + 400;  // keep drawing a little: Spark sorts in a worker
  if (!drawPending) { drawPending = true; requestAnimationFrame(draw); }
}

function draw() {
  drawPending = false;
  for (const p of hook.panels) {
    if (p.div.hidden || !p.loaded) continue;
    applyCamera(p.camera, p.canvas.width, p.canvas.height);
    p.renderer.render(p.scene, p.camera);
    p.frames += 1;
    p.div.dataset.frames = p.frames;
  }
  lastDraw = performance.now();
  document.body.dataset.frames = hook.frames().join(",");
  if (performance.now() < settleUntil || moving()) {
    drawPending = true;
    requestAnimationFrame(draw);
  }
}

function checkReady() {
  if (hook.panels.every((p) => p.loaded || p.error)) {
    hook.ready = true;
    document.body.dataset.ready = "1";
    statusEl.textContent = "";
  }
}

// ---- controls: orbit (drag, right-drag pan, wheel zoom) and fly (WASD QE + drag look) --------
function rotate(axis, angle, pivot) {
  const q = new THREE.Quaternion().setFromAxisAngle(axis.clone().normalize(), angle);
  view.right.applyQuaternion(q); view.down.applyQuaternion(q); view.fwd.applyQuaternion(q);
  if (pivot) view.pos.sub(pivot).applyQuaternion(q).add(pivot);
}

function movedByUser() {
  if (photoPanel) { photoPanel.current = null; showPhoto(null); }
  view.name = "";
  requestDraw();
}

let drag = null;
function onPointerDown(e) {
  drag = { x: e.clientX, y: e.clientY, pan: e.button === 2 || e.shiftKey };
  e.target.setPointerCapture(e.pointerId);
}
function onPointerMove(e) {
  if (!drag) return;
  const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
  drag.x = e.clientX; drag.y = e.clientY;
  if (!dx && !dy) return;
  const k = 0.005;
  if (drag.pan) {
    const dist = view.pos.distanceTo(view.target);
    const s = dist * 0.0015;
    const off = view.right.clone().multiplyScalar(-dx * s).addScaledVector(view.down, -dy * s);
    view.pos.add(off); view.target.add(off);
  } else if (hook.mode === "orbit") {
    rotate(view.up, -dx * k, view.target);
    rotate(view.right, -dy * k, view.target);
  } else {
    rotate(view.up, -dx * k, null);
    rotate(view.right, -dy * k, null);
    const dist = view.pos.distanceTo(view.target);
    view.target.copy(view.pos).addScaledVector(view.fwd, dist);
  }
  movedByUser();
}
function onPointerUp() { drag = null; }
function onWheel(e) {
  e.preventDefault();
  const dist = view.pos.distanceTo(view.target);
  if (hook.mode === "orbit") {
    const f = Math.exp(e.deltaY * 0.001);
    const nd = Math.max(dist * f, 1e-3 * info.radius);
    view.pos.copy(view.target).addScaledVector(view.fwd, -nd);
  } else {
    view.pos.addScaledVector(view.fwd, -e.deltaY * 0.001 * info.radius);
    view.target.copy(view.pos).addScaledVector(view.fwd, dist);
  }
  movedByUser();
}

const keys = new Set();
function moving() { return hook.mode === "fly" && [..."wasdqe"].some((k) => keys.has(k)); }
let lastFly = 0;
function flyStep() {
  const now = performance.now();
  const dt = Math.min(0.1, (now - lastFly) / 1000);
  lastFly = now;
  if (!moving()) return;
  const v = new THREE.Vector3();
  if (keys.has("w")) v.add(view.fwd);
  if (keys.has("s")) v.sub(view.fwd);
  if (keys.has("d")) v.add(view.right);
  if (keys.has("a")) v.sub(view.right);
  if (keys.has("e")) v.add(view.up);
  if (keys.has("q")) v.sub(view.up);
  const step = v.multiplyScalar(0.6 * info.radius * dt);
  view.pos.add(step); view.target.add(step);
  movedByUser();
  requestAnimationFrame(flyStep);
}

function setLayout(l) {
  hook.layout = l;
  document.getElementById("layout").textContent = l === "side" ? "side by side" : `one at a time (${single + 1})`;
  layout();
}
function setMode(m) {
  hook.mode = m;
  document.getElementById("mode").textContent = m;
}

function allCameras() {
  const out = [];
  for (const split of Object.keys(info.cameras)) for (const c of info.cameras[split]) out.push(c);
  return out;
}
function stepCamera(delta) {
  const cams = allCameras();
  if (!cams.length) return;
  const sel = document.getElementById("cameras");
  let i = cams.findIndex((c) => `${c.split}/${c.index}` === sel.value);
  i = (i + delta + cams.length) % cams.length;
  setFromCamera(cams[i]);
}

function onKey(e) {
  if (e.target && e.target.tagName === "SELECT") return;
  const k = e.key.toLowerCase();
  if (e.type === "keyup") { keys.delete(k); return; }
  if (hook.mode === "fly" && "wasdqe".includes(k) && k.length === 1) {
    if (!keys.has(k)) { keys.add(k); lastFly = performance.now(); requestAnimationFrame(flyStep); }
    return;
  }
  if (k === "t") {
    if (hook.layout === "side") setLayout("single");
    else if (single + 1 < hook.panels.length) { single += 1; setLayout("single"); }
    else { single = 0; setLayout("side"); }
  } else if (k >= "1" && k <= "9") {
    const i = Number(k) - 1;
    if (i < hook.panels.length) { single = i; setLayout("single"); }
  } else if (k === "0" || k === "escape") {
    setLayout("side");
  } else if (k === "f") {
    setMode(hook.mode === "orbit" ? "fly" : "orbit");
  } else if (k === "[") {
    stepCamera(-1);
  } else if (k === "]") {
    stepCamera(1);
  } else if (k === "g" && photoPanel) {
    const box = document.getElementById("show-photo");
    box.checked = !box.checked; showPhoto(photoPanel.current);
  } else if (k === "r") {
    setFromCamera(info.initial_camera);
  }
}

// ---- start -------------------------------------------------------------------------------
async function main() {
  const r = await fetch("/api/scene.json");
  info = await r.json();
  hook.info = info;
  document.title = `splatdistill view: ${info.models.map((m) => m.name.split("/").pop()).join(" | ")}`;
  view.up.set(...info.up).normalize();
  statusEl.textContent = "loading…";
  hook.panels = info.models.map((m) => makePanel(m, info.background));
  const cams = allCameras();
  if (cams.length) {
    makePhotoPanel();
    document.getElementById("camera-pick").hidden = false;
    const sel = document.getElementById("cameras");
    for (const c of cams) {
      const o = document.createElement("option");
      o.value = `${c.split}/${c.index}`; o.textContent = `${c.split} ${c.index}: ${c.name}`;
      sel.append(o);
    }
    sel.addEventListener("change", () => {
      const [split, idx] = sel.value.split("/");
      setFromCamera(info.cameras[split][Number(idx)]);
    });
    document.getElementById("prev-cam").onclick = () => stepCamera(-1);
    document.getElementById("next-cam").onclick = () => stepCamera(1);
    document.getElementById("show-photo").onchange = () => showPhoto(photoPanel.current);
  }
  document.getElementById("layout").onclick = () => setLayout(hook.layout === "side" ? "single" : "side");
  document.getElementById("mode").onclick = () => setMode(hook.mode === "orbit" ? "fly" : "orbit");
  for (const p of hook.panels) {
    p.canvas.addEventListener("pointerdown", onPointerDown);
    p.canvas.addEventListener("pointermove", onPointerMove);
    p.canvas.addEventListener("pointerup", onPointerUp);
    p.canvas.addEventListener("wheel", onWheel, { passive: false });
    p.canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  }
  window.addEventListener("keydown", onKey);
  window.addEventListener("keyup", onKey);
  window.addEventListener("resize", layout);
  setFromCamera(info.initial_camera);
  layout();
  checkReady();
}

main().catch((e) => { hook.error = String(e); statusEl.textContent = "error: " + e; console.error(e); });
