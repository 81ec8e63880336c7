// Registers every shipped model with the compiler (the one file under models/ that is not a model file).
import { registerModel } from '../compiler/registry.ts';
import flux1Dev, { flux1Fill, flux1Schnell } from './flux1.ts';
import flux2Dev, { flux2Klein4B, flux2Klein9B } from './flux2.ts';
import tinyFlux from './tiny-flux.ts';

registerModel('tiny-flux', tinyFlux);
registerModel('flux1-dev', flux1Dev);
registerModel('flux1-schnell', flux1Schnell);
registerModel('flux1-fill', flux1Fill);
registerModel('flux2-dev', flux2Dev);
registerModel('flux2-klein-4b', flux2Klein4B);
registerModel('flux2-klein-9b', flux2Klein9B);
import gemma3Text from './gemma3-text.ts';
import longcatImage, { longcatImageEdit } from './longcat-image.ts';
import ovisImage from './ovis-image.ts';
import qwenImage, { qwenImage2512 } from './qwen-image.ts';
import { wan21I2V14B, wan21T2V13B, wan21T2V14B, wan22T2VA14B } from './wan2.1.ts';
import zImageTurbo from './z-image.ts';

registerModel('qwen-image', qwenImage);
registerModel('qwen-image-2512', qwenImage2512);
registerModel('gemma3-text', gemma3Text);
registerModel('wan2.1-t2v-1.3b', wan21T2V13B);
registerModel('wan2.1-t2v-14b', wan21T2V14B);
registerModel('wan2.2-t2v-a14b', wan22T2VA14B);
registerModel('wan2.1-i2v-14b', wan21I2V14B);
registerModel('z-image-turbo', zImageTurbo);
registerModel('ovis-image', ovisImage);
registerModel('longcat-image', longcatImage);
registerModel('longcat-image-edit', longcatImageEdit);
