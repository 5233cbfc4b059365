// The Merkle tree that lets one signature cover a batch of requests (RFC 10049 §5.3).

import { hash, hashInto } from "./hashes.ts";

const LEAF = Uint8Array.of(0x00);
const NODE = Uint8Array.of(0x01);
/** A PATH holds at most 32 hashes, so a tree at most 2^32 leaves; ours are far smaller. */
export const MAX_PATH = 32;

/** A leaf's value: H(0x00 ‖ the request packet, ROUGHTIM header included). */
export function leafHash(requestPacket: Uint8Array): Uint8Array {
  return hash(LEAF, requestPacket);
}

/** Writes a leaf's value into `target` at `at`, allocating nothing. */
export function leafHashInto(requestPacket: Uint8Array, target: Uint8Array, at: number): void {
  hashInto(target, at, LEAF, requestPacket);
}

/** An inner node's value: H(0x01 ‖ left ‖ right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return hash(NODE, left, right);
}

/**
 * A tree over a batch's leaves, padded with zero nodes to a power of two: its root, and
 * for each leaf the PATH of siblings from the leaf up (RFC 10049 §5.3.1). The RFC leaves
 * padding to the server, as a client only hashes its own path: a node with no leaf below
 * it is zero too, not hashed. Every node is 32 bytes of one buffer, leaves first, then
 * each level up to the root.
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
  /** How many hashes a PATH holds: the tree's height. */
  readonly depth: number;
  readonly #nodes: Uint8Array;
  /** Where each level starts in #nodes, in nodes: leaves at 0, the root last. */
  readonly #levels: number[] = [0];

  /** A tree over leaf hashes already made. */
  constructor(leaves: readonly Uint8Array[]);
  /** A tree over `count` leaves that `hashLeaf(i, nodes, at)` writes into `nodes` at `at`. */
  constructor(count: number, hashLeaf: (i: number, nodes: Uint8Array, at: number) => void);
  constructor(
    leaves: readonly Uint8Array[] | number,
    hashLeaf?: (i: number, nodes: Uint8Array, at: number) => void,
  ) {
    const count = typeof leaves === "number" ? leaves : leaves.length;
    if (count === 0) throw new TypeError("a Merkle tree needs a leaf");
    let width = 1, depth = 0;
    while (width < count) width *= 2, depth++;
    this.depth = depth;
    const nodes = this.#nodes = new Uint8Array(32 * (2 * width - 1));
    for (let i = 0; i < count; i++) {
      if (typeof leaves === "number") hashLeaf!(i, nodes, 32 * i);
      else nodes.set(leaves[i], 32 * i);
    }
    // Only nodes with a leaf below them are hashed: one over padding alone stays zero.
    for (let below = 0, live = count; width > 1; width /= 2, live = Math.ceil(live / 2)) {
      const above = below + width;
      for (let i = 0; i < live; i += 2) {
        hashInto(
          nodes,
          32 * (above + i / 2),
          NODE,
          nodes.subarray(32 * (below + i), 32 * (below + i + 2)),
        );
      }
      this.#levels.push(above);
      below = above;
    }
  }

  /** The root: ROOT in SREP. */
  get root(): Uint8Array {
    const at = 32 * this.#levels[this.depth];
    return this.#nodes.subarray(at, at + 32);
  }

  /** Leaf `index`'s PATH: its sibling at each level, leaf first, concatenated. */
  path(index: number): Uint8Array {
    const path = new Uint8Array(32 * this.depth);
    this.writePath(index, path, 0);
    return path;
  }

  /** Writes leaf `index`'s PATH into `target` at `at`: a response written in place. */
  writePath(index: number, target: Uint8Array, at: number): void {
    const nodes = this.#nodes, levels = this.#levels;
    for (let level = 0, node = index; level < this.depth; level++, node >>= 1) {
      const sibling = 32 * (levels[level] + (node ^ 1));
      target.set(nodes.subarray(sibling, sibling + 32), at + 32 * level);
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
