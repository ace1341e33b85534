// Every differential case, by area (cases/*.ts). Ids are unique across them.
import { CACHE_CASES } from './cases/cache.ts';
import { PROXY_CASES } from './cases/proxy.ts';
import { HOST_CASES, REDIRECT_CASES, REWRITE_CASES } from './cases/rewrite.ts';
import { SHAPE_CASES } from './cases/shape.ts';
import type { Case } from './harness.ts';

export const CASES: readonly Case[] = [...PROXY_CASES, ...HOST_CASES, ...REWRITE_CASES, ...REDIRECT_CASES, ...CACHE_CASES, ...SHAPE_CASES];
