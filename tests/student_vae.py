"""A plain, correct student solution of the practical, written the way the
course skeleton and a typical student write it: naive formulas (log of the
sigmoid), `grad` of an objective that binarises inside, Adam by hand, and a
second objective call per batch for the epoch's estimate; run as a script,
it trains and saves the assignment's figures. Used by test_check.py and
test_check_script.py (as a submission, with one mistake at a time) and by
test_skeleton_compat.py (its `train` against vae.train). Not a test module."""
import autograd.numpy as np
import autograd.numpy.random as npr
from autograd import grad
from autograd.misc import flatten
from data import load_mnist
from data import save_images as s_images


def sigmoid(x):
    return 0.5 * (np.tanh(x / 2.0) + 1)


def relu(x):
    return np.maximum(0, x)


def init_net_params(layer_sizes, scale=1e-2):
    return [(scale * npr.randn(m, n), scale * npr.randn(n))
            for m, n in zip(layer_sizes[:-1], layer_sizes[1:])]


def neural_net_predict(params, inputs):
    for W, b in params[:-1]:
        inputs = relu(np.dot(inputs, W) + b)
    W, b = params[-1]
    return np.dot(inputs, W) + b


def sample_latent_variables_from_posterior(encoder_output):
    D = encoder_output.shape[-1] // 2
    mean, log_std = encoder_output[:, :D], encoder_output[:, D:]
    return mean + np.exp(log_std) * npr.randn(*mean.shape)


def bernoulli_log_prob(targets, logits):
    p = sigmoid(logits)
    return np.sum(targets * np.log(p) + (1 - targets) * np.log(1 - p), axis=-1)


def compute_KL(q_means_and_log_stds):
    D = q_means_and_log_stds.shape[-1] // 2
    mean, log_std = q_means_and_log_stds[:, :D], q_means_and_log_stds[:, D:]
    return 0.5 * np.sum(np.exp(2 * log_std) + mean ** 2 - 1 - 2 * log_std, axis=-1)


def vae_lower_bound(gen_params, rec_params, data):
    q = neural_net_predict(rec_params, data)
    z = sample_latent_variables_from_posterior(q)
    logits = neural_net_predict(gen_params, z)
    return np.mean(bernoulli_log_prob(data, logits) - compute_KL(q))


def train(train_images, latent_dim=50, hidden=200, epochs=30, batch_size=200, seed=0):
    npr.seed(seed)
    init_gen_params = init_net_params([latent_dim, hidden, hidden, 784])
    init_rec_params = init_net_params([784, hidden, hidden, 2 * latent_dim])
    flat_params, unflat_params = flatten((init_gen_params, init_rec_params))
    num_batches = int(np.ceil(len(train_images) / batch_size))

    def objective(flat_params):
        gen_params, rec_params = unflat_params(flat_params)
        x = train_images[batch * batch_size:(batch + 1) * batch_size]
        on = x > npr.uniform(size=x.shape)
        images = x * 0.0
        images[on] = 1.0
        return vae_lower_bound(gen_params, rec_params, images)

    objective_grad = grad(objective)
    m, v, t = np.zeros(len(flat_params)), np.zeros(len(flat_params)), 1
    elbos = []
    for epoch in range(epochs):
        elbo_est = 0
        for batch in range(num_batches):
            g = objective_grad(flat_params)
            m = 0.9 * m + (1 - 0.9) * g
            v = 0.999 * v + (1 - 0.999) * g ** 2
            mhat, vhat = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)
            flat_params = flat_params + 0.001 * mhat / (np.sqrt(vhat) + 1e-8)
            elbo_est += objective(flat_params)
            t += 1
        elbos.append(elbo_est / num_batches)
    return flat_params, elbos, npr.get_state()[1].copy()


def save_images(images, filename):
    s_images(images, filename, vmin=0, vmax=1)


if __name__ == "__main__":
    N, train_images, _, test_images, _ = load_mnist()
    flat_params, elbos, _ = train(train_images)
    for epoch, elbo in enumerate(elbos, 1):
        print(f"epoch {epoch}: ELBO {elbo:.2f}")
    sizes = ([50, 200, 200, 784], [784, 200, 200, 100])
    like = tuple([(np.zeros((m, n)), np.zeros(n)) for m, n in zip(s[:-1], s[1:])] for s in sizes)
    gen_params, rec_params = flatten(like)[1](flat_params)

    # 25 samples from the prior, shown as Bernoulli means
    samples = sigmoid(neural_net_predict(gen_params, npr.randn(25, 50)))
    save_images(samples, "samples.png")

    # the first 10 test images, and below them their reconstructions
    q = neural_net_predict(rec_params, test_images[:10])
    reconstructions = sigmoid(neural_net_predict(gen_params, sample_latent_variables_from_posterior(q)))
    s_images(np.concatenate([test_images[:10], reconstructions]), "reconstructions.png",
             ims_per_row=10, vmin=0, vmax=1)

    # interpolations between the recognition model's means
    for a, b in [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]:
        ends = neural_net_predict(rec_params, test_images[[a, b]])[:, :50]
        z = np.array([s * ends[0] + (1 - s) * ends[1] for s in np.linspace(0, 1, 25)])
        save_images(sigmoid(neural_net_predict(gen_params, z)), f"interpolation_{a}_{b}.png")
