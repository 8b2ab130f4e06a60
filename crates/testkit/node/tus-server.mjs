// tus-server.mjs: @tus/server with @tus/file-store on 127.0.0.1, for
// comparing corral with Node's reference tus server.
//
//   node tus-server.mjs DIR [PORT]
//
// Serves tus 1.0 at /files and stores each upload as DIR/<id> (its metadata
// as DIR/<id>.json). PORT defaults to 0: the OS picks one. Once listening
// it prints one JSON line on stdout, {"port": N, "path": "/files"}; errors go
// to stderr.

import { FileStore } from '@tus/file-store'
import { Server } from '@tus/server'

const [directory, portArg = '0'] = process.argv.slice(2)
if (!directory) {
  console.error('usage: node tus-server.mjs DIR [PORT]')
  process.exit(2)
}
const port = Number(portArg)
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`tus-server.mjs: not a port: ${portArg}`)
  process.exit(2)
}

const path = '/files'
const server = new Server({ path, datastore: new FileStore({ directory }) })
const listener = server.listen({ host: '127.0.0.1', port })
listener.on('listening', () => {
  console.log(JSON.stringify({ port: listener.address().port, path }))
})
listener.on('error', (error) => {
  console.error(`tus-server.mjs: ${error.stack || error}`)
  process.exit(1)
})
