// A player for asciinema v2 recordings (.cast) on an xterm.js terminal: the header line gives the terminal's size,
// each event line is [seconds, code, data]; "o" output is written when its time comes, "r" ("COLSxROWS") resizes.
// Play, pause, speed and restart; pauses longer than the header's idle_time_limit are shortened to it.

/** Parse a .cast text: {header, events: [[seconds, code, data], ...], duration}. Throws on a malformed file. */
export function parseCast(text) {
  const lines = text.split("\n").filter((line) => line.trim() !== "");
  if (!lines.length) throw new Error("the recording is empty");
  let header;
  try {
    header = JSON.parse(lines[0]);
  } catch {
    throw new Error("the first line is not an asciicast header");
  }
  if (!header || header.version !== 2) throw new Error(`not an asciicast v2 file (version ${header && header.version})`);
  const limit = Number(header.idle_time_limit) > 0 ? Number(header.idle_time_limit) : Infinity;
  const events = [];
  let last = 0;
  let shift = 0; // time taken out of long pauses so far
  for (let i = 1; i < lines.length; i += 1) {
    let event;
    try {
      event = JSON.parse(lines[i]);
    } catch {
      throw new Error(`line ${i + 1} is not JSON`);
    }
    if (!Array.isArray(event) || event.length < 3 || typeof event[0] !== "number" || typeof event[1] !== "string") {
      throw new Error(`line ${i + 1} is not an event [time, code, data]`);
    }
    const gap = event[0] - last;
    if (gap > limit) shift += gap - limit;
    last = event[0];
    events.push([Math.max(0, event[0] - shift), event[1], String(event[2])]);
  }
  return { header, events, duration: events.length ? events[events.length - 1][0] : 0 };
}

/** `"COLSxROWS"` -> [cols, rows], or null. */
export function parseSize(text) {
  const m = /^(\d+)x(\d+)$/.exec(text);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

export class CastPlayer {
  /** `term`: an xterm.js Terminal; `onChange(player)` is called on every state change and about 4 times a second. */
  constructor(term, cast, onChange = () => {}) {
    this.term = term;
    this.cast = cast;
    this.onChange = onChange;
    this.speed = 1;
    this.state = "ready"; // ready | playing | paused | finished
    this.index = 0;
    this.position = 0; // seconds into the recording
    this.timer = null;
    this.ticker = null;
    this.startedWall = 0;
    this.startedPos = 0;
    this.reset();
  }

  reset() {
    const { width, height } = this.cast.header;
    this.term.reset();
    if (width > 0 && height > 0) this.term.resize(width, height);
    this.index = 0;
    this.position = 0;
  }

  now() {
    return this.state === "playing" ? this.startedPos + ((performance.now() - this.startedWall) / 1000) * this.speed
      : this.position;
  }

  play() {
    if (this.state === "playing") return;
    if (this.state === "finished") {
      this.reset();
    }
    this.startedWall = performance.now();
    this.startedPos = this.position;
    this.state = "playing";
    this.ticker = setInterval(() => this.onChange(this), 250);
    this.step();
    this.onChange(this);
  }

  pause() {
    if (this.state !== "playing") return;
    this.position = this.now();
    this.stopTimers();
    this.state = "paused";
    this.onChange(this);
  }

  restart() {
    const playing = this.state === "playing";
    this.stopTimers();
    this.state = "ready";
    this.reset();
    if (playing) this.play();
    else this.onChange(this);
  }

  setSpeed(speed) {
    if (this.state === "playing") {
      this.position = this.now();
      this.startedWall = performance.now();
      this.startedPos = this.position;
    }
    this.speed = speed;
    if (this.state === "playing") {
      clearTimeout(this.timer);
      this.step();
    }
    this.onChange(this);
  }

  /** Write every event that is due, then sleep until the next one. */
  step() {
    this.timer = null;
    const at = this.now();
    const { events } = this.cast;
    let output = "";
    while (this.index < events.length && events[this.index][0] <= at) {
      const [, code, data] = events[this.index];
      if (code === "o") {
        output += data;
      } else if (code === "r") {
        const size = parseSize(data);
        if (output) this.term.write(output);
        output = "";
        if (size) this.term.resize(size[0], size[1]);
      }
      this.index += 1;
    }
    if (output) this.term.write(output);
    if (this.index >= events.length) {
      this.stopTimers();
      this.position = this.cast.duration;
      this.state = "finished";
      this.onChange(this);
      return;
    }
    const wait = ((events[this.index][0] - at) / this.speed) * 1000;
    this.timer = setTimeout(() => this.step(), Math.max(0, Math.min(wait, 2 ** 31 - 1)));
  }

  stopTimers() {
    clearTimeout(this.timer);
    clearInterval(this.ticker);
    this.timer = null;
    this.ticker = null;
  }

  dispose() {
    this.stopTimers();
    this.state = "paused";
  }
}
