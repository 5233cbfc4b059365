// The Merkle tree that lets one signature cover a batch of requests (RFC 10049 §5.3).

import { hash } from "./hashes.ts";

const LEAF = Uint8Array.of(0x00);
const NODE = Uint8Array.of(0x01);
/** A PATH holds at most 32 hashes, so a tree at most 2^32 leaves; ours are far smaller. */
export const MAX_PATH = 32;

/** A leaf's value: H(0x00 ‖ the request packet, ROUGHTIM header included). */
export function leafHash(requestPacket: Uint8Array): Uint8Array {
  return hash(LEAF, requestPacket);
}

/** An inner node's value: H(0x01 ‖ left ‖ right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return hash(NODE, left, right);
}

/**
 * A tree over a batch's leaves, padded with zero nodes to a power of two: its root, and
 * for each leaf the PATH of siblings from the leaf up (RFC 10049 §5.3.1).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { leafHash, MerkleTree, rootFromPath } from "./merkle.ts";
 *
 * const leaves = ["a", "b", "c"].map((text) => leafHash(new TextEncoder().encode(text)));
 * const tree = new MerkleTree(leaves);
 * for (let i = 0; i < leaves.length; i++) {
 *   assert.deepEqual(rootFromPath(leaves[i], i, tree.path(i)), tree.root);
 * }
 * ```
 */
export class MerkleTree {
  /** The levels, leaves first; each a power of two long, the last the root alone. */
  readonly #levels: Uint8Array[][];

  constructor(leaves: readonly Uint8Array[]) {
    if (leaves.length === 0) throw new TypeError("a Merkle tree needs a leaf");
    let width = 1;
    while (width < leaves.length) width *= 2;
    const level = [...leaves];
    while (level.length < width) level.push(new Uint8Array(32));
    this.#levels = [level];
    for (let below = level; below.length > 1;) {
      const above: Uint8Array[] = [];
      for (let i = 0; i < below.length; i += 2) above.push(nodeHash(below[i], below[i + 1]));
      this.#levels.push(above);
      below = above;
    }
  }

  /** The root: ROOT in SREP. */
  get root(): Uint8Array {
    return this.#levels[this.#levels.length - 1][0];
  }

  /** How many hashes a PATH holds: the tree's height. */
  get depth(): number {
    return this.#levels.length - 1;
  }

  /** Leaf `index`'s PATH: its sibling at each level, leaf first, concatenated. */
  path(index: number): Uint8Array {
    const path = new Uint8Array(32 * this.depth);
    this.writePath(index, path, 0);
    return path;
  }

  /** Writes leaf `index`'s PATH into `target` at `at`: a response written in place. */
  writePath(index: number, target: Uint8Array, at: number): void {
    const depth = this.depth;
    for (let level = 0, node = index; level < depth; level++, node >>= 1) {
      target.set(this.#levels[level][node ^ 1], at + 32 * level);
    }
  }
}

/**
 * The root that `leaf` at `index` reaches through `path` (RFC 10049 §5.3.1), or null when
 * the path is too long, not whole hashes, or `index` has bits left over when it ends.
 */
export function rootFromPath(leaf: Uint8Array, index: number, path: Uint8Array): Uint8Array | null {
  if (path.length % 32 !== 0 || path.length / 32 > MAX_PATH) return null;
  let h = leaf, bits = index >>> 0;
  for (let at = 0; at < path.length; at += 32, bits >>>= 1) {
    const node = path.subarray(at, at + 32);
    h = (bits & 1) === 0 ? nodeHash(h, node) : nodeHash(node, h);
  }
  return bits === 0 ? h : null;
}
