// Registers every shipped model with the compiler (the one file under models/ that is not a model file).
import { registerModel } from '../compiler/registry.ts';
import flux1Dev from './flux1.ts';
import tinyFlux from './tiny-flux.ts';

registerModel('tiny-flux', tinyFlux);
registerModel('flux1-dev', flux1Dev);
