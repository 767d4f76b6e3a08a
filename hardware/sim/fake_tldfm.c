/*
 * fake_tldfm.c -- a device-level fake of Thorlabs' deformable-mirror driver libraries
 * TLDFM_64 (basic control) and TLDFMX_64 (Zernike extension), for a DMP40 driver with a
 * DMH40 40-segment mirror.
 *
 * One shared library exports both APIs with the real names and the real VXIpnp C signatures
 * (Thorlabs TLDFM.h / TLDFMX.h, 2019), so hardware/tldfm.py drives it through exactly the
 * ctypes code it uses for the real DLLs. Build: gcc -shared -fPIC -O2 -o x.so fake_tldfm.c -lm
 * (hardware/sim/fake_tldfm.py does it).
 *
 * Types: ViStatus = int32, ViSession = uint32, ViBoolean = uint16, ViReal64 = double,
 * ViUInt32 = uint32, ViInt32 = int32, ViInt16 = int16, ViChar = char. Status < 0 is an error,
 * > 0 a warning; TLDFM_error_message turns any status into text.
 *
 * ---------------------------------------------------------------------------------------
 * The simulated device
 * ---------------------------------------------------------------------------------------
 * - One device, resource "USB0::0x1313::0x8016::M00000000::RAW", instrument "DMH40/M",
 *   serial "M00000000". 40 segments, no tip/tilt arms (the arms arguments exist in the
 *   signatures and are ignored; T_TILT is "not supported", T_BOTH acts on the mirror and
 *   returns the warning TLDFM_WARNING_NO_TILT_ARMS).
 * - Segment voltage range [vmin, vmax], default 0..300 V, read by the caller from
 *   TLDFM_get_device_configuration / TLDFM_get_segment_minimum / _maximum. The flat voltage
 *   is v_flat = (vmin + vmax) / 2. Power-on and TLDFM_reset put every segment at vmin and
 *   switch hysteresis compensation on (as in Thorlabs' C sample); the mirror is flat only
 *   after a relax or a zero Zernike pattern.
 * - Zernike extension: 12 device modes Z4..Z15 (ANSI/OSA numbering from 1, see
 *   hardware/mirror_modes.py), amplitudes limited to [-1, 1], relax in 10 steps.
 *
 * Segment layout (normalised pupil radius rho, angle theta counter-clockwise from +x):
 *   ring 0:  4 segments at rho = 0.22, theta = 45 + 90 k deg   (segments  0..3)
 *   ring 1: 12 segments at rho = 0.53, theta = 15 + 30 k deg   (segments  4..15)
 *   ring 2: 24 segments at rho = 0.84, theta = 7.5 + 15 k deg  (segments 16..39)
 * P[s][k] is the Zernike term (n, m) of device mode k (Noll normalisation, unit RMS on the
 * disk; m < 0 uses sin(|m| theta)) evaluated at the centre of segment s.
 *
 * TLDFMX_calculate_zernike_pattern:  v[s] = v_flat + gain * sum_{k selected} a_k P[s][k],
 * with gain (V per device unit) = 0.8 * (vmax - vmin) / 2 / max_{s,k} |P[s][k]|, so a single
 * mode at +-1 stays in range while sums of several large modes can leave it. The pattern is
 * NOT clipped: the caller must check it before applying it.
 *
 * The surface is a function of the applied voltages only: the effective mode amplitudes are
 * the least-squares fit a_eff = argmin |P a - (v - v_flat) / gain|, and the surface Noll
 * coefficients (j = 1..15, micrometres of OPD in the pupil) are  c = D a_eff  with a hidden
 * 15 x 12 matrix D (row j-1 = Noll j). The built-in D models a mount rotation phi and a scale
 * s_k and sign sigma_k per mode: the surface of device mode k (n, m) is
 * s_k sigma_k Z_nm(rho, theta - phi), i.e. the nominal shape turned counter-clockwise by phi:
 *   D[noll(n, m)][k]  = s_k sigma_k cos(|m| phi)
 *   D[noll(n, -m)][k] = s_k sigma_k sin(|m| phi) * sign(m)      (m != 0)
 * Default: phi = 4 deg, s = {0.55, 1.10, 0.62, 0.41, 0.78, 0.74, 0.45, 0.33, 0.52, 0.95, 0.58,
 * 0.36} um per device unit, sigma = -1 for Z8 (ComX) and Z12 (SAstY), +1 otherwise
 * (hardware/sim/fake_tldfm.py: DEFAULT_HIDDEN is the same).
 *
 * TLDFMX_relax: step i of N = 10 returns v = v_flat + (-1)^i 0.9 (vmax - vmin)/2 * 0.6^i on
 * every segment for i < N - 1 and v_flat at the last step; *pRemainingSteps = N - 1 - i.
 * isFirstStep restarts the sequence; "reload" is ignored. The pattern is only computed: the
 * caller applies it with TLDFM_set_segment_voltages. A relax counts as done when the caller
 * has received the pattern with remaining == 0.
 *
 * Limits: every out-of-range (or non-finite) voltage request is refused with an error and
 * counted (state.rejected_voltage_requests); every out-of-range amplitude passed to
 * TLDFMX_calculate_zernike_pattern likewise (state.rejected_amplitude_requests). A safe
 * caller keeps both counters at 0.
 *
 * ---------------------------------------------------------------------------------------
 * Simulator-only functions (prefix FAKE_; all return 0 on success or a negative status)
 * ---------------------------------------------------------------------------------------
 *   FAKE_restore_defaults(void)                  power-cycle: close, default range, default D,
 *                                                one device, counters and faults cleared
 *   FAKE_set_voltage_range(double vmin, double vmax)   only while closed
 *   FAKE_set_device_count(int n)                 0 or 1 devices visible (only while closed)
 *   FAKE_set_mode_map(const double *D, int rows, int cols)   rows = 15, cols = 12, row-major
 *   FAKE_get_mode_map(double *D, int rows, int cols)
 *   FAKE_get_surface_noll(double *out, int n)    first n (<= 15) Noll coefficients, um
 *   FAKE_get_segment_layout(double *rho, double *theta_rad, int n)   n = 40
 *   FAKE_inject_fault(const char *function, int code, int after_n_calls)
 *       the (after_n_calls + 1)-th call from now of `function` (NULL or "" = any TLDFM_ or
 *       TLDFMX_ function except *_error_message) returns `code` and does nothing else.
 *       One fault at a time, one-shot; code 0 disarms.
 *   FAKE_get_state(FAKE_state_t *out, int size)  size must be sizeof(FAKE_state_t)
 */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef int32_t ViStatus;
typedef uint32_t ViSession;
typedef uint32_t ViUInt32;
typedef int32_t ViInt32;
typedef int16_t ViInt16;
typedef uint16_t ViBoolean;
typedef double ViReal64;
typedef char ViChar;

#define EXPORT __attribute__((visibility("default")))

/* ---- status codes (values of the VISA and Thorlabs headers) ---- */
#define VI_SUCCESS 0
#define VI_ERR(x) ((ViStatus)(INT32_MIN + (x)))
#define VI_ERROR_INV_OBJECT VI_ERR(0x3FFF000E)
#define VI_ERROR_RSRC_NFOUND VI_ERR(0x3FFF0011)
#define VI_ERROR_TMO VI_ERR(0x3FFF0015)
#define VI_ERROR_RSRC_BUSY VI_ERR(0x3FFF0072)
#define VI_ERROR_PARAMETER(n) VI_ERR(0x3FFC0000 + (n))
#define VI_WARN_UNKNOWN_STATUS ((ViStatus)0x3FFF0085)

#define TLDFM_INSTR_WARNING_OFFSET 0x3FFC0900
#define TLDFM_INSTR_ERROR_OFFSET VI_ERR(TLDFM_INSTR_WARNING_OFFSET)
#define TLDFM_ERROR_USBCOMM_OFFSET VI_ERR(0x3FFC0B00)
#define TLDFM_HEAD_ERR (TLDFM_INSTR_ERROR_OFFSET + 0x01)
#define TLDFM_HEAD_ERR_DATA_RANGE (TLDFM_INSTR_ERROR_OFFSET + 0x05)
#define TLDFM_ERROR_EXTERNAL_PWR (TLDFM_INSTR_ERROR_OFFSET + 0x0C)
#define TLDFM_ERROR_INTERNAL_PWR (TLDFM_INSTR_ERROR_OFFSET + 0x0D)
#define TLDFM_ERROR_OHT_EL (TLDFM_INSTR_ERROR_OFFSET + 0x0E)
#define TLDFM_ERROR_OHT_HV_MI (TLDFM_INSTR_ERROR_OFFSET + 0x10)
#define TLDFM_ERROR_UNKNOWN_TARGET (TLDFM_INSTR_ERROR_OFFSET + 0x21)
#define TLDFM_ERROR_NOSUP_TARGET (TLDFM_INSTR_ERROR_OFFSET + 0x22)
#define TL_ERROR_PARAMETER9 (TLDFM_INSTR_ERROR_OFFSET + 0x99)
#define TLDFM_ERROR_UNKNOWN (TLDFM_INSTR_ERROR_OFFSET + 0xFF)
#define TLDFM_WARNING_NO_TILT_ARMS ((ViStatus)(TLDFM_INSTR_WARNING_OFFSET + 0x10))
#define TLDFMX_ERROR_NOTINIT (TLDFM_ERROR_UNKNOWN + 0x02)
#define TLDFMX_ERROR_ITERATION (TLDFM_ERROR_UNKNOWN + 0x04)
#define TLDFMX_ERROR_AMPL_RANGE (TLDFM_ERROR_UNKNOWN + 0x09)

#define T_MIRROR 0u
#define T_TILT 1u
#define T_BOTH 2u

/* ---- device constants ---- */
#define N_SEG 40
#define N_MODES 12
#define N_NOLL 15
#define RELAX_STEPS 10
#define MEASUREMENT_STEPS 105
#define MAX_HYST_POINTS 16
#define BUFFER_SIZE 256
#define NAME_SIZE 28
#define ERR_BUFFER_SIZE 512
#define DEG (M_PI / 180.0)

static const char *RESOURCE = "USB0::0x1313::0x8016::M00000000::RAW";
static const char *MANUFACTURER = "Thorlabs GmbH";
static const char *INSTRUMENT = "DMH40/M";
static const char *SERIAL = "M00000000";

/* device mode k (Z4 + k): radial order n, signed azimuthal order m (ANSI), Noll partner */
static const int MODE_N[N_MODES] = {2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4};
static const int MODE_M[N_MODES] = {-2, 0, 2, -3, -1, 1, 3, -4, -2, 0, 2, 4};

static const double DEFAULT_SCALES_UM[N_MODES] = {0.55, 1.10, 0.62, 0.41, 0.78, 0.74,
                                                  0.45, 0.33, 0.52, 0.95, 0.58, 0.36};
static const int DEFAULT_SIGNS[N_MODES] = {1, 1, 1, 1, -1, 1, 1, 1, -1, 1, 1, 1};
static const double DEFAULT_ROTATION_DEG = 4.0;

/* ---- state ---- */
typedef struct {
    int32_t is_open;
    int32_t x_open;
    int32_t segment_count;
    int32_t device_count;
    int32_t hysteresis_mirror;
    int32_t hysteresis_points; /* count of the last set_hysteresis_parameters, 0 = none */
    int32_t relax_active;
    int32_t relax_next_step;
    int32_t relax_count; /* finished relax sequences */
    int32_t rejected_voltage_requests;
    int32_t rejected_amplitude_requests;
    int32_t calls;          /* TLDFM_/TLDFMX_ calls, error_message excluded */
    int32_t voltage_writes; /* accepted voltage writes */
    uint32_t session;
    double vmin;
    double vmax;
    double vflat;
    double gain_v;
    double voltages[N_SEG];
} FAKE_state_t;

static FAKE_state_t S;
static ViSession session_counter;
static double SEG_RHO[N_SEG], SEG_THETA[N_SEG];
static double P[N_SEG][N_MODES];
static double FIT[N_MODES][N_SEG]; /* (P^T P)^-1 P^T */
static double P_MAXABS;
static double D[N_NOLL][N_MODES];
static int initialised;

static char fault_function[64];
static ViStatus fault_code;
static int fault_countdown = -1;

/* ---- math helpers ---- */
static double factorial(int n) {
    double f = 1.0;
    for (int i = 2; i <= n; i++) f *= i;
    return f;
}

static double zernike_nm(int n, int m, double rho, double theta) {
    int q = m < 0 ? -m : m;
    double r = 0.0;
    for (int s = 0; s <= (n - q) / 2; s++) {
        double c = factorial(n - s) /
                   (factorial(s) * factorial((n + q) / 2 - s) * factorial((n - q) / 2 - s));
        r += (s % 2 ? -c : c) * pow(rho, n - 2 * s);
    }
    if (m == 0) return sqrt(n + 1.0) * r;
    if (m > 0) return sqrt(2.0 * (n + 1)) * r * cos(q * theta);
    return sqrt(2.0 * (n + 1)) * r * sin(q * theta);
}

static int noll_index(int n, int m) {
    /* Noll j for (n, m): even j <-> cos (m > 0), odd j <-> sin (m < 0) */
    int q = m < 0 ? -m : m;
    int first = n * (n + 1) / 2 + 1;
    for (int j = first; j < first + n + 1; j++) {
        int k = j - first;
        int mj = (n % 2 == 0) ? 2 * ((k + 1) / 2) : 2 * (k / 2) + 1;
        if (mj != q) continue;
        if (q == 0 || (m > 0) == (j % 2 == 0)) return j;
    }
    return -1;
}

/* invert the 12 x 12 normal matrix with Gauss-Jordan elimination and partial pivoting */
static int invert(double a[N_MODES][N_MODES], double inv[N_MODES][N_MODES]) {
    double w[N_MODES][2 * N_MODES];
    for (int i = 0; i < N_MODES; i++)
        for (int j = 0; j < 2 * N_MODES; j++)
            w[i][j] = j < N_MODES ? a[i][j] : (j - N_MODES == i ? 1.0 : 0.0);
    for (int c = 0; c < N_MODES; c++) {
        int p = c;
        for (int r = c + 1; r < N_MODES; r++)
            if (fabs(w[r][c]) > fabs(w[p][c])) p = r;
        if (fabs(w[p][c]) < 1e-12) return -1;
        for (int j = 0; j < 2 * N_MODES; j++) {
            double t = w[c][j];
            w[c][j] = w[p][j];
            w[p][j] = t;
        }
        double d = w[c][c];
        for (int j = 0; j < 2 * N_MODES; j++) w[c][j] /= d;
        for (int r = 0; r < N_MODES; r++) {
            if (r == c) continue;
            double f = w[r][c];
            for (int j = 0; j < 2 * N_MODES; j++) w[r][j] -= f * w[c][j];
        }
    }
    for (int i = 0; i < N_MODES; i++)
        for (int j = 0; j < N_MODES; j++) inv[i][j] = w[i][j + N_MODES];
    return 0;
}

static void build_geometry(void) {
    static const int count[3] = {4, 12, 24};
    static const double radius[3] = {0.22, 0.53, 0.84};
    static const double offset_deg[3] = {45.0, 15.0, 7.5};
    int s = 0;
    for (int ring = 0; ring < 3; ring++)
        for (int k = 0; k < count[ring]; k++, s++) {
            SEG_RHO[s] = radius[ring];
            SEG_THETA[s] = (offset_deg[ring] + 360.0 * k / count[ring]) * DEG;
        }
    P_MAXABS = 0.0;
    for (s = 0; s < N_SEG; s++)
        for (int k = 0; k < N_MODES; k++) {
            P[s][k] = zernike_nm(MODE_N[k], MODE_M[k], SEG_RHO[s], SEG_THETA[s]);
            if (fabs(P[s][k]) > P_MAXABS) P_MAXABS = fabs(P[s][k]);
        }
    double ata[N_MODES][N_MODES], inv[N_MODES][N_MODES];
    for (int i = 0; i < N_MODES; i++)
        for (int j = 0; j < N_MODES; j++) {
            double acc = 0.0;
            for (s = 0; s < N_SEG; s++) acc += P[s][i] * P[s][j];
            ata[i][j] = acc;
        }
    if (invert(ata, inv) != 0) {
        memset(FIT, 0, sizeof FIT); /* unreachable with this layout */
        return;
    }
    for (int i = 0; i < N_MODES; i++)
        for (s = 0; s < N_SEG; s++) {
            double acc = 0.0;
            for (int j = 0; j < N_MODES; j++) acc += inv[i][j] * P[s][j];
            FIT[i][s] = acc;
        }
}

static void default_mode_map(void) {
    double phi = DEFAULT_ROTATION_DEG * DEG;
    memset(D, 0, sizeof D);
    for (int k = 0; k < N_MODES; k++) {
        int n = MODE_N[k], m = MODE_M[k], q = m < 0 ? -m : m;
        double s = DEFAULT_SCALES_UM[k] * DEFAULT_SIGNS[k];
        D[noll_index(n, m) - 1][k] = s * cos(q * phi);
        if (m != 0) D[noll_index(n, -m) - 1][k] = s * sin(q * phi) * (m > 0 ? 1.0 : -1.0);
    }
}

static void set_range(double vmin, double vmax) {
    S.vmin = vmin;
    S.vmax = vmax;
    S.vflat = 0.5 * (vmin + vmax);
    S.gain_v = 0.8 * 0.5 * (vmax - vmin) / P_MAXABS;
}

static void power_on(void) {
    for (int s = 0; s < N_SEG; s++) S.voltages[s] = S.vmin;
    S.hysteresis_mirror = 1;
    S.relax_active = 0;
    S.relax_next_step = 0;
}

static void restore_defaults(void) {
    memset(&S, 0, sizeof S);
    S.segment_count = N_SEG;
    S.device_count = 1;
    build_geometry();
    default_mode_map();
    set_range(0.0, 300.0);
    power_on();
    fault_code = 0;
    fault_countdown = -1;
    fault_function[0] = '\0';
    initialised = 1;
}

static void ensure_init(void) {
    if (!initialised) restore_defaults();
}

/* every public call passes here first: counts it and fires an armed fault */
static int fault_fires(const char *name) {
    ensure_init();
    S.calls++;
    if (fault_countdown < 0) return 0;
    if (fault_function[0] && strcmp(fault_function, name) != 0) return 0;
    if (fault_countdown > 0) {
        fault_countdown--;
        return 0;
    }
    fault_countdown = -1;
    return 1;
}

#define ENTER(name)                              \
    do {                                         \
        if (fault_fires(name)) return fault_code; \
    } while (0)

#define NEED(ptr, n)                                    \
    do {                                                \
        if ((ptr) == NULL) return VI_ERROR_PARAMETER(n); \
    } while (0)

static ViStatus check_session(ViSession h) {
    if (!S.is_open || h != S.session) return VI_ERROR_INV_OBJECT;
    return VI_SUCCESS;
}

static ViStatus check_x_session(ViSession h) {
    ViStatus st = check_session(h);
    if (st) return st;
    return S.x_open ? VI_SUCCESS : TLDFMX_ERROR_NOTINIT;
}

static int voltage_ok(double v) { return v >= S.vmin && v <= S.vmax; } /* NaN fails */

static void copy_text(char *dst, const char *src, size_t size) {
    snprintf(dst, size, "%s", src);
}

/* ======================================================================================
 * TLDFM: discovery, session, utility
 * ====================================================================================== */
EXPORT ViStatus TLDFM_get_device_count(ViSession h, ViUInt32 *pDeviceCount) {
    (void)h;
    ENTER("TLDFM_get_device_count");
    NEED(pDeviceCount, 2);
    *pDeviceCount = (ViUInt32)S.device_count;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_get_device_information(ViSession h, ViUInt32 deviceIndex,
                                             ViChar *manufacturer, ViChar *instrumentName,
                                             ViChar *serialNumber, ViBoolean *pDeviceAvailable,
                                             ViChar *resourceName) {
    (void)h;
    ENTER("TLDFM_get_device_information");
    if (deviceIndex >= (ViUInt32)S.device_count) return VI_ERROR_PARAMETER(2);
    if (manufacturer) copy_text(manufacturer, MANUFACTURER, BUFFER_SIZE);
    if (instrumentName) copy_text(instrumentName, INSTRUMENT, NAME_SIZE);
    if (serialNumber) copy_text(serialNumber, SERIAL, NAME_SIZE);
    if (pDeviceAvailable) *pDeviceAvailable = S.is_open ? 0 : 1;
    if (resourceName) copy_text(resourceName, RESOURCE, BUFFER_SIZE);
    return VI_SUCCESS;
}

static ViStatus open_device(const ViChar *resourceName, ViBoolean resetDevice,
                            ViSession *pHandle, int with_x) {
    NEED(resourceName, 1);
    NEED(pHandle, 4);
    *pHandle = 0;
    if (S.device_count < 1 || strcmp(resourceName, RESOURCE) != 0) return VI_ERROR_RSRC_NFOUND;
    if (S.is_open) return VI_ERROR_RSRC_BUSY;
    S.is_open = 1;
    S.x_open = with_x;
    S.session = 0x00D0F000u + (++session_counter);
    S.relax_active = 0;
    if (resetDevice) power_on();
    *pHandle = S.session;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_init(ViChar *resourceName, ViBoolean IDQuery, ViBoolean resetDevice,
                           ViSession *pInstrumentHandle) {
    (void)IDQuery;
    ENTER("TLDFM_init");
    return open_device(resourceName, resetDevice, pInstrumentHandle, 0);
}

EXPORT ViStatus TLDFM_close(ViSession h) {
    ENTER("TLDFM_close");
    ViStatus st = check_session(h);
    if (st) return st;
    S.is_open = 0;
    S.x_open = 0;
    S.session = 0;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_reset(ViSession h) {
    ENTER("TLDFM_reset");
    ViStatus st = check_session(h);
    if (st) return st;
    power_on();
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_self_test(ViSession h, ViInt16 *pSelfTestResult, ViChar *selfTestMessage) {
    ENTER("TLDFM_self_test");
    ViStatus st = check_session(h);
    if (st) return st;
    NEED(pSelfTestResult, 2);
    NEED(selfTestMessage, 3);
    *pSelfTestResult = 0;
    copy_text(selfTestMessage, "Self-test passed (fake DMH40)", BUFFER_SIZE);
    return VI_SUCCESS;
}

static const char *status_text(ViStatus code) {
    static char buf[96];
    switch (code) {
    case VI_SUCCESS: return "The operation completed successfully.";
    case VI_ERROR_INV_OBJECT: return "The given session or object reference is invalid.";
    case VI_ERROR_RSRC_NFOUND:
        return "Insufficient location information or the requested device or resource is "
               "not present in the system.";
    case VI_ERROR_TMO: return "Timeout expired before the operation completed.";
    case VI_ERROR_RSRC_BUSY: return "The resource is valid, but it is in use (already open).";
    case TLDFM_HEAD_ERR: return "Unspecified device error.";
    case TLDFM_HEAD_ERR_DATA_RANGE: return "Data out of range.";
    case TLDFM_ERROR_EXTERNAL_PWR: return "No external power supply.";
    case TLDFM_ERROR_INTERNAL_PWR: return "Internal power supply failure.";
    case TLDFM_ERROR_OHT_EL: return "The electronics are overheated.";
    case TLDFM_ERROR_OHT_HV_MI: return "The mirror high-voltage stage is overheated.";
    case TLDFM_ERROR_UNKNOWN_TARGET: return "Unknown target.";
    case TLDFM_ERROR_NOSUP_TARGET: return "The target is not supported by this device.";
    case TL_ERROR_PARAMETER9: return "Parameter 9 is out of range or invalid.";
    case TLDFM_ERROR_UNKNOWN: return "Unknown device error.";
    case TLDFM_ERROR_USBCOMM_OFFSET: return "USB communication error: the device went away.";
    case TLDFM_WARNING_NO_TILT_ARMS: return "Warning: the device has no tilt arms.";
    case TLDFMX_ERROR_NOTINIT:
        return "Zernike extension not initialised (open the device with TLDFMX_init).";
    case TLDFMX_ERROR_ITERATION:
        return "Iteration error: no relax sequence running (call with isFirstStep = true).";
    case TLDFMX_ERROR_AMPL_RANGE: return "Zernike amplitude out of range.";
    default: break;
    }
    for (int n = 1; n <= 8; n++)
        if (code == VI_ERROR_PARAMETER(n)) {
            snprintf(buf, sizeof buf, "Parameter %d is out of range or invalid.", n);
            return buf;
        }
    return NULL;
}

EXPORT ViStatus TLDFM_error_message(ViSession h, ViStatus errorCode, ViChar *errorMessage) {
    (void)h;
    ensure_init();
    NEED(errorMessage, 3);
    const char *text = status_text(errorCode);
    if (text == NULL) {
        snprintf(errorMessage, ERR_BUFFER_SIZE, "Unknown status code 0x%08X.",
                 (unsigned)errorCode);
        return VI_WARN_UNKNOWN_STATUS;
    }
    copy_text(errorMessage, text, ERR_BUFFER_SIZE);
    return VI_SUCCESS;
}

/* ======================================================================================
 * TLDFM: configuration and voltages
 * ====================================================================================== */
EXPORT ViStatus TLDFM_get_segment_count(ViSession h, ViUInt32 *pSegmentCount) {
    ENTER("TLDFM_get_segment_count");
    ViStatus st = check_session(h);
    if (st) return st;
    NEED(pSegmentCount, 2);
    *pSegmentCount = N_SEG;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_get_segment_minimum(ViSession h, ViReal64 *pSegmentMinimum) {
    ENTER("TLDFM_get_segment_minimum");
    ViStatus st = check_session(h);
    if (st) return st;
    NEED(pSegmentMinimum, 2);
    *pSegmentMinimum = S.vmin;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_get_segment_maximum(ViSession h, ViReal64 *pSegmentMaximum) {
    ENTER("TLDFM_get_segment_maximum");
    ViStatus st = check_session(h);
    if (st) return st;
    NEED(pSegmentMaximum, 2);
    *pSegmentMaximum = S.vmax;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_get_tilt_count(ViSession h, ViUInt32 *pTiltCount) {
    ENTER("TLDFM_get_tilt_count");
    ViStatus st = check_session(h);
    if (st) return st;
    NEED(pTiltCount, 2);
    *pTiltCount = 0;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_get_device_configuration(ViSession h, ViUInt32 *pSegmentCnt,
                                               ViReal64 *pMinSegmentVoltage,
                                               ViReal64 *pMaxSegmentVoltage,
                                               ViReal64 *pSegmentCommonVoltageMax,
                                               ViUInt32 *pTiltElementCnt,
                                               ViReal64 *pMinTiltVoltage,
                                               ViReal64 *pMaxTiltVoltage,
                                               ViReal64 *pTiltCommonVoltageMax) {
    ENTER("TLDFM_get_device_configuration");
    ViStatus st = check_session(h);
    if (st) return st;
    NEED(pSegmentCnt, 2);
    NEED(pMinSegmentVoltage, 3);
    NEED(pMaxSegmentVoltage, 4);
    NEED(pSegmentCommonVoltageMax, 5);
    NEED(pTiltElementCnt, 6);
    NEED(pMinTiltVoltage, 7);
    NEED(pMaxTiltVoltage, 8);
    if (pTiltCommonVoltageMax == NULL) return TL_ERROR_PARAMETER9;
    *pSegmentCnt = N_SEG;
    *pMinSegmentVoltage = S.vmin;
    *pMaxSegmentVoltage = S.vmax;
    *pSegmentCommonVoltageMax = S.vmax;
    *pTiltElementCnt = 0;
    *pMinTiltVoltage = 0.0;
    *pMaxTiltVoltage = 0.0;
    *pTiltCommonVoltageMax = 0.0;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_set_segment_voltage(ViSession h, ViUInt32 segmentIndex,
                                          ViReal64 segmentVoltage) {
    ENTER("TLDFM_set_segment_voltage");
    ViStatus st = check_session(h);
    if (st) return st;
    if (segmentIndex >= N_SEG) return VI_ERROR_PARAMETER(2);
    if (!voltage_ok(segmentVoltage)) {
        S.rejected_voltage_requests++;
        return VI_ERROR_PARAMETER(3);
    }
    S.voltages[segmentIndex] = segmentVoltage;
    S.voltage_writes++;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_get_segment_voltage(ViSession h, ViUInt32 segmentIndex,
                                          ViReal64 *pSegmentVoltage) {
    ENTER("TLDFM_get_segment_voltage");
    ViStatus st = check_session(h);
    if (st) return st;
    if (segmentIndex >= N_SEG) return VI_ERROR_PARAMETER(2);
    NEED(pSegmentVoltage, 3);
    *pSegmentVoltage = S.voltages[segmentIndex];
    return VI_SUCCESS;
}

static ViStatus write_segments(const ViReal64 *v) {
    for (int s = 0; s < N_SEG; s++)
        if (!voltage_ok(v[s])) {
            S.rejected_voltage_requests++;
            return VI_ERROR_PARAMETER(2);
        }
    memcpy(S.voltages, v, sizeof S.voltages);
    S.voltage_writes++;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_set_segment_voltages(ViSession h, ViReal64 segmentVoltages[]) {
    ENTER("TLDFM_set_segment_voltages");
    ViStatus st = check_session(h);
    if (st) return st;
    NEED(segmentVoltages, 2);
    return write_segments(segmentVoltages);
}

EXPORT ViStatus TLDFM_get_segment_voltages(ViSession h, ViReal64 segmentVoltages[]) {
    ENTER("TLDFM_get_segment_voltages");
    ViStatus st = check_session(h);
    if (st) return st;
    NEED(segmentVoltages, 2);
    memcpy(segmentVoltages, S.voltages, sizeof S.voltages);
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_set_voltages(ViSession h, ViReal64 segmentVoltages[],
                                   ViReal64 tiltVoltages[]) {
    (void)tiltVoltages; /* no tilt arms on a DMH40 */
    ENTER("TLDFM_set_voltages");
    ViStatus st = check_session(h);
    if (st) return st;
    NEED(segmentVoltages, 2);
    return write_segments(segmentVoltages);
}

EXPORT ViStatus TLDFM_get_voltages(ViSession h, ViReal64 segmentVoltages[],
                                   ViReal64 tiltVoltages[]) {
    (void)tiltVoltages;
    ENTER("TLDFM_get_voltages");
    ViStatus st = check_session(h);
    if (st) return st;
    NEED(segmentVoltages, 2);
    memcpy(segmentVoltages, S.voltages, sizeof S.voltages);
    return VI_SUCCESS;
}

/* ======================================================================================
 * TLDFM: hysteresis
 * ====================================================================================== */
static ViStatus check_target(ViUInt32 target) {
    if (target > T_BOTH) return TLDFM_ERROR_UNKNOWN_TARGET;
    if (target == T_TILT) return TLDFM_ERROR_NOSUP_TARGET;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFM_set_hysteresis_parameters(ViSession h, ViUInt32 target, ViUInt32 count,
                                                ViReal64 nonlinearFactor,
                                                ViReal64 arrayTresholdInverter[],
                                                ViReal64 arrayWeightInverter[]) {
    ENTER("TLDFM_set_hysteresis_parameters");
    ViStatus st = check_session(h);
    if (st) return st;
    if ((st = check_target(target))) return st;
    if (count < 1 || count > MAX_HYST_POINTS) return VI_ERROR_PARAMETER(3);
    if (!isfinite(nonlinearFactor)) return VI_ERROR_PARAMETER(4);
    NEED(arrayTresholdInverter, 5);
    NEED(arrayWeightInverter, 6);
    for (ViUInt32 i = 0; i < count; i++)
        if (!isfinite(arrayTresholdInverter[i])) return VI_ERROR_PARAMETER(5);
    for (ViUInt32 i = 0; i < count; i++)
        if (!isfinite(arrayWeightInverter[i])) return VI_ERROR_PARAMETER(6);
    S.hysteresis_points = (int32_t)count;
    return target == T_BOTH ? TLDFM_WARNING_NO_TILT_ARMS : VI_SUCCESS;
}

EXPORT ViStatus TLDFM_enable_hysteresis_compensation(ViSession h, ViUInt32 target,
                                                     ViBoolean enable) {
    ENTER("TLDFM_enable_hysteresis_compensation");
    ViStatus st = check_session(h);
    if (st) return st;
    if ((st = check_target(target))) return st;
    S.hysteresis_mirror = enable ? 1 : 0;
    return target == T_BOTH ? TLDFM_WARNING_NO_TILT_ARMS : VI_SUCCESS;
}

EXPORT ViStatus TLDFM_enabled_hysteresis_compensation(ViSession h, ViUInt32 target,
                                                      ViBoolean *pEnabled) {
    ENTER("TLDFM_enabled_hysteresis_compensation");
    ViStatus st = check_session(h);
    if (st) return st;
    if ((st = check_target(target))) return st;
    NEED(pEnabled, 3);
    *pEnabled = (ViBoolean)S.hysteresis_mirror;
    return VI_SUCCESS;
}

/* ======================================================================================
 * TLDFMX: Zernike extension
 * ====================================================================================== */
EXPORT ViStatus TLDFMX_init(ViChar *resourceName, ViBoolean IDQuery, ViBoolean resetDevice,
                            ViSession *pInstrumentHandle) {
    (void)IDQuery;
    ENTER("TLDFMX_init");
    return open_device(resourceName, resetDevice, pInstrumentHandle, 1);
}

EXPORT ViStatus TLDFMX_close(ViSession h) {
    ENTER("TLDFMX_close");
    ViStatus st = check_x_session(h);
    if (st) return st;
    S.is_open = 0;
    S.x_open = 0;
    S.session = 0;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFMX_reset(ViSession h) {
    ENTER("TLDFMX_reset");
    ViStatus st = check_x_session(h);
    if (st) return st;
    power_on();
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFMX_error_message(ViSession h, ViStatus errorCode, ViChar *errorMessage) {
    return TLDFM_error_message(h, errorCode, errorMessage);
}

EXPORT ViStatus TLDFMX_get_parameters(ViSession h, ViReal64 *pMinimumZernikeAmplitude,
                                      ViReal64 *pMaximumZernikeAmplitude,
                                      ViInt32 *pZernikeCount, ViInt32 *pMeasurementSteps,
                                      ViInt32 *pRelaxSteps) {
    ENTER("TLDFMX_get_parameters");
    ViStatus st = check_x_session(h);
    if (st) return st;
    NEED(pMinimumZernikeAmplitude, 2);
    NEED(pMaximumZernikeAmplitude, 3);
    NEED(pZernikeCount, 4);
    NEED(pMeasurementSteps, 5);
    NEED(pRelaxSteps, 6);
    *pMinimumZernikeAmplitude = -1.0;
    *pMaximumZernikeAmplitude = 1.0;
    *pZernikeCount = N_MODES;
    *pMeasurementSteps = MEASUREMENT_STEPS;
    *pRelaxSteps = RELAX_STEPS;
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFMX_calculate_zernike_pattern(ViSession h, ViUInt32 zernikes,
                                                 ViReal64 deviceZernikeAmplitudes[],
                                                 ViReal64 mirrorPattern[]) {
    ENTER("TLDFMX_calculate_zernike_pattern");
    ViStatus st = check_x_session(h);
    if (st) return st;
    NEED(deviceZernikeAmplitudes, 3);
    NEED(mirrorPattern, 4);
    for (int k = 0; k < N_MODES; k++) {
        double a = deviceZernikeAmplitudes[k];
        if ((zernikes >> k) & 1u && !(a >= -1.0 && a <= 1.0)) {
            S.rejected_amplitude_requests++;
            return TLDFMX_ERROR_AMPL_RANGE;
        }
    }
    for (int s = 0; s < N_SEG; s++) {
        double acc = 0.0;
        for (int k = 0; k < N_MODES; k++)
            if ((zernikes >> k) & 1u) acc += deviceZernikeAmplitudes[k] * P[s][k];
        mirrorPattern[s] = S.vflat + S.gain_v * acc;
    }
    return VI_SUCCESS;
}

EXPORT ViStatus TLDFMX_relax(ViSession h, ViUInt32 devicePart, ViBoolean isFirstStep,
                             ViBoolean reload, ViReal64 relaxPatternMirror[],
                             ViReal64 relaxPatternArms[], ViInt32 *pRemainingSteps) {
    (void)reload;
    (void)relaxPatternArms;
    ENTER("TLDFMX_relax");
    ViStatus st = check_x_session(h);
    if (st) return st;
    if ((st = check_target(devicePart))) return st;
    NEED(relaxPatternMirror, 5);
    NEED(pRemainingSteps, 7);
    if (isFirstStep) {
        S.relax_active = 1;
        S.relax_next_step = 0;
    } else if (!S.relax_active) {
        return TLDFMX_ERROR_ITERATION;
    }
    int i = S.relax_next_step;
    double amp = 0.0;
    if (i < RELAX_STEPS - 1)
        amp = (i % 2 ? -1.0 : 1.0) * 0.9 * 0.5 * (S.vmax - S.vmin) * pow(0.6, i);
    for (int s = 0; s < N_SEG; s++) relaxPatternMirror[s] = S.vflat + amp;
    *pRemainingSteps = RELAX_STEPS - 1 - i;
    S.relax_next_step = i + 1;
    if (*pRemainingSteps == 0) {
        S.relax_active = 0;
        S.relax_count++;
    }
    return VI_SUCCESS;
}

/* ======================================================================================
 * FAKE_: simulator-only access
 * ====================================================================================== */
EXPORT int FAKE_restore_defaults(void) {
    restore_defaults();
    return VI_SUCCESS;
}

EXPORT int FAKE_set_voltage_range(double vmin, double vmax) {
    ensure_init();
    if (S.is_open) return VI_ERROR_RSRC_BUSY;
    if (!(isfinite(vmin) && isfinite(vmax) && vmax > vmin)) return VI_ERROR_PARAMETER(1);
    set_range(vmin, vmax);
    for (int s = 0; s < N_SEG; s++) /* power-on state of the new supply */
        S.voltages[s] = vmin;
    return VI_SUCCESS;
}

EXPORT int FAKE_set_device_count(int n) {
    ensure_init();
    if (S.is_open) return VI_ERROR_RSRC_BUSY;
    if (n < 0 || n > 1) return VI_ERROR_PARAMETER(1);
    S.device_count = n;
    return VI_SUCCESS;
}

EXPORT int FAKE_set_mode_map(const double *map, int rows, int cols) {
    ensure_init();
    if (map == NULL) return VI_ERROR_PARAMETER(1);
    if (rows != N_NOLL || cols != N_MODES) return VI_ERROR_PARAMETER(2);
    for (int i = 0; i < rows * cols; i++)
        if (!isfinite(map[i])) return VI_ERROR_PARAMETER(1);
    memcpy(D, map, sizeof D);
    return VI_SUCCESS;
}

EXPORT int FAKE_get_mode_map(double *map, int rows, int cols) {
    ensure_init();
    if (map == NULL) return VI_ERROR_PARAMETER(1);
    if (rows != N_NOLL || cols != N_MODES) return VI_ERROR_PARAMETER(2);
    memcpy(map, D, sizeof D);
    return VI_SUCCESS;
}

EXPORT int FAKE_get_surface_noll(double *out, int n) {
    ensure_init();
    if (out == NULL) return VI_ERROR_PARAMETER(1);
    if (n < 0 || n > N_NOLL) return VI_ERROR_PARAMETER(2);
    double a[N_MODES];
    for (int k = 0; k < N_MODES; k++) {
        double acc = 0.0;
        for (int s = 0; s < N_SEG; s++) acc += FIT[k][s] * (S.voltages[s] - S.vflat);
        a[k] = acc / S.gain_v;
    }
    for (int j = 0; j < n; j++) {
        double acc = 0.0;
        for (int k = 0; k < N_MODES; k++) acc += D[j][k] * a[k];
        out[j] = acc;
    }
    return VI_SUCCESS;
}

EXPORT int FAKE_get_segment_layout(double *rho, double *theta_rad, int n) {
    ensure_init();
    if (rho == NULL || theta_rad == NULL) return VI_ERROR_PARAMETER(1);
    if (n != N_SEG) return VI_ERROR_PARAMETER(3);
    memcpy(rho, SEG_RHO, sizeof SEG_RHO);
    memcpy(theta_rad, SEG_THETA, sizeof SEG_THETA);
    return VI_SUCCESS;
}

EXPORT int FAKE_inject_fault(const char *function, int code, int after_n_calls) {
    ensure_init();
    if (after_n_calls < 0) return VI_ERROR_PARAMETER(3);
    if (function != NULL && strlen(function) >= sizeof fault_function)
        return VI_ERROR_PARAMETER(1);
    copy_text(fault_function, function ? function : "", sizeof fault_function);
    fault_code = code;
    fault_countdown = code == 0 ? -1 : after_n_calls;
    return VI_SUCCESS;
}

EXPORT int FAKE_get_state(FAKE_state_t *out, int size) {
    ensure_init();
    if (out == NULL) return VI_ERROR_PARAMETER(1);
    if (size != (int)sizeof(FAKE_state_t)) return VI_ERROR_PARAMETER(2);
    *out = S;
    return VI_SUCCESS;
}
