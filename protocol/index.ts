export * from './ids.js'
export * from './limits.js'
export * from './schemas.js'
export * from './codec.js'
